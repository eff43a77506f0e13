//! The one rtnetlink request berth-cni makes: setting a device up, by name, in the calling
//! thread's network namespace.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Sets the device `name` up (IFF_UP) in the network namespace of the calling thread: a
/// netlink socket belongs to the namespace of the thread that makes it.
pub(crate) fn set_link_up(name: &str) -> io::Result<()> {
    // Socket::new opens the socket with SOCK_CLOEXEC.
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;

    // Index 0 and IFLA_IFNAME: the kernel finds the device by name.
    let mut link = LinkMessage::default();
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    link.attributes
        .push(LinkAttribute::IfName(name.to_string()));
    let mut packet = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::SetLink(link)),
    );
    packet.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    if sock.send(&buf, 0)? != buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the netlink request was cut short",
        ));
    }
    loop {
        let data = match sock.recv_from_full() {
            Ok((data, _)) => data,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut off = 0;
        while off < data.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = reply.header.length as usize;
            if len == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a netlink message of length 0",
                ));
            }
            off = off.saturating_add(len.next_multiple_of(4));
            if reply.header.sequence_number != 1 {
                continue;
            }
            if let NetlinkPayload::Error(e) = reply.payload {
                return match e.code {
                    None => Ok(()),
                    Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                };
            }
        }
    }
}
