//! `linux.netDevices` (runtime-spec 1.3): host network devices moved into the container's
//! network namespace, renamed, given back their permanent global addresses and set up.
//!
//! Everything goes through rtnetlink. Moving a device to another namespace flushes its
//! addresses, so they are read on the host first and added back inside. The kernel renames
//! the device in the same RTM_SETLINK that moves it (IFLA_NET_NS_FD with IFLA_IFNAME: the
//! device is moved, then renamed in its new namespace), but a rename that fails leaves the
//! device moved under its host name: so a name taken in the container is refused before
//! anything moves. Every device is looked up before the first one moves, so that a missing
//! device or a taken name leaves every device where it was.
//!
//! Nothing is moved back at delete (the spec forbids it): a virtual device is destroyed with
//! the namespace, a physical one goes back to the initial namespace by the kernel's doing.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::{Linux, LinuxNamespaceType, LinuxNetDevice};

use crate::error::{Context, Error, Result};
use crate::namespace::Namespaces;

/// The kernel's limit on an interface name, in bytes, without the terminating NUL.
const MAX_NAME: usize = 15;

/// Address flags that RTM_NEWADDR accepts from user space and that describe the address
/// rather than its current state (tentative, deprecated) or its rank (secondary).
const KEPT_FLAGS: AddressFlags = AddressFlags::Nodad
    .union(AddressFlags::Homeaddress)
    .union(AddressFlags::Managetempaddr)
    .union(AddressFlags::Noprefixroute)
    .union(AddressFlags::Mcautojoin);

/// Checks `linux.netDevices` against the rest of the spec, before anything is created:
/// the error is the field and the reason.
pub fn check(linux: &Linux, ns: &Namespaces) -> std::result::Result<(), (String, String)> {
    let Some(devices) = linux.net_devices().as_ref().filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    if !ns.has(LinuxNamespaceType::Network) {
        return Err((
            "linux.netDevices".into(),
            "needs a network namespace in linux.namespaces (without one the devices would \
             stay on the host)"
                .into(),
        ));
    }
    let mut targets: HashMap<&str, &str> = HashMap::new();
    for (host, dev) in sorted(devices) {
        valid_name(host, false).map_err(|r| (format!("linux.netDevices[{host:?}]"), r))?;
        let field = || format!("linux.netDevices[{host:?}].name");
        let target = target_name(host, dev);
        valid_name(target, true).map_err(|r| (field(), r))?;
        if is_template(target) {
            // The kernel gives each its own number.
            continue;
        }
        if let Some(other) = targets.insert(target, host) {
            return Err((
                field(),
                format!("{target:?} is also the container name of {other:?}"),
            ));
        }
    }
    Ok(())
}

/// Opens the network namespace of the process `pid`.
pub fn open_netns(pid: i32) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/ns/net");
    open(
        path.as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("linux.netDevices: open the container's network namespace {path}"))
}

/// Moves each host device of `devices` into the network namespace `netns`, renamed, with its
/// permanent global addresses, and sets it up. Must run while the process is
/// single-threaded: the socket used inside is made after a setns of the whole process.
pub fn move_devices(devices: &HashMap<String, LinuxNetDevice>, netns: BorrowedFd) -> Result<()> {
    if devices.is_empty() {
        return Ok(());
    }
    let mut host = Rtnl::open().map_err(|e| op_err("open a netlink socket on the host", e))?;
    let mut guest = Rtnl::open_in(netns)?;

    // Everything that can be refused is checked before the first device moves.
    let taken = guest
        .link_names()
        .map_err(|e| op_err("list the devices of the container's network namespace", e))?;
    let addresses = host
        .addresses()
        .map_err(|e| op_err("list the addresses on the host", e))?;
    let mut plans = Vec::new();
    for (host_name, dev) in sorted(devices) {
        let target = target_name(host_name, dev);
        let index = host
            .link_index(host_name)
            .map_err(|e| op_err(format!("find {host_name} on the host"), e))?;
        if !is_template(target) && taken.values().any(|n| n == target) {
            return Err(op_err(
                move_op(host_name, target),
                kernel_error(Errno::EEXIST),
            ));
        }
        plans.push(Plan {
            host_name,
            target,
            index,
            addresses: keep_addresses(&addresses, index),
        });
    }

    for p in &plans {
        p.carry_out(&mut host, &mut guest, netns)?;
    }
    Ok(())
}

/// One device to move.
struct Plan<'a> {
    host_name: &'a str,
    target: &'a str,
    index: u32,
    addresses: Vec<AddressMessage>,
}

impl Plan<'_> {
    fn carry_out(&self, host: &mut Rtnl, guest: &mut Rtnl, netns: BorrowedFd) -> Result<()> {
        let (from, to) = (self.host_name, self.target);
        let before = guest
            .link_names()
            .map_err(|e| op_err("list the devices of the container's network namespace", e))?;
        let mut msg = LinkMessage::default();
        msg.header.index = self.index;
        msg.attributes
            .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        msg.attributes.push(LinkAttribute::IfName(to.to_string()));
        host.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map_err(|e| op_err(move_op(from, to), e))?;

        // The index may change on the way in; the device is the new one with the name asked.
        let after = guest
            .link_names()
            .map_err(|e| op_err("list the devices of the container's network namespace", e))?;
        let Some((&index, name)) = after
            .iter()
            .find(|(i, n)| !before.contains_key(i) && fits(to, n))
        else {
            return Err(op_err(
                format!("find {from} in the container's network namespace as {to}"),
                kernel_error(Errno::ENODEV),
            ));
        };
        for a in &self.addresses {
            let new = readd_message(a, index, from, name);
            guest
                .request(
                    RouteNetlinkMessage::NewAddress(new),
                    NLM_F_CREATE | NLM_F_EXCL,
                )
                .map_err(|e| op_err(format!("add {} to {name}", describe(a)), e))?;
        }
        let mut up = LinkMessage::default();
        up.header.index = index;
        up.header.flags = LinkFlags::Up;
        up.header.change_mask = LinkFlags::Up;
        guest
            .request(RouteNetlinkMessage::SetLink(up), 0)
            .map_err(|e| op_err(format!("set {name} up"), e))?;
        Ok(())
    }
}

fn sorted(devices: &HashMap<String, LinuxNetDevice>) -> Vec<(&str, &LinuxNetDevice)> {
    let mut v: Vec<_> = devices.iter().map(|(k, d)| (k.as_str(), d)).collect();
    v.sort_by_key(|(k, _)| *k);
    v
}

/// The name in the container: the one asked for, else the host's (an empty name counts as
/// none, as in runc).
fn target_name<'a>(host: &'a str, dev: &'a LinuxNetDevice) -> &'a str {
    dev.name()
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(host)
}

fn is_template(name: &str) -> bool {
    name.contains("%d")
}

/// The kernel's rules for an interface name (`dev_valid_name`, and `dev_alloc_name` for a
/// template: one `%d`, no other `%`).
fn valid_name(name: &str, template_allowed: bool) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("the name must not be empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "{name:?} is {} bytes long (the kernel allows {MAX_NAME})",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{name:?} holds {c:?}, not allowed in an interface name"
        ));
    }
    let percents = name.matches('%').count();
    if percents > 0 {
        if !template_allowed {
            return Err(format!("{name:?}: a host device name cannot be a template"));
        }
        if percents > 1 || !name.contains("%d") {
            return Err(format!(
                "{name:?}: a template holds exactly one %d and no other %"
            ));
        }
    }
    Ok(())
}

/// True if `name` is `want`, or what the kernel makes of the template `want`.
fn fits(want: &str, name: &str) -> bool {
    let Some((pre, post)) = want.split_once("%d") else {
        return want == name;
    };
    name.strip_prefix(pre)
        .and_then(|r| r.strip_suffix(post))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The addresses of device `index` that the spec says to keep: permanent, global scope.
fn keep_addresses(all: &[AddressMessage], index: u32) -> Vec<AddressMessage> {
    all.iter()
        .filter(|a| a.header.index == index && a.header.scope == AddressScope::Universe)
        .filter(|a| flags_of(a).contains(AddressFlags::Permanent))
        .cloned()
        .collect()
}

/// IFA_FLAGS when present (it holds the bits past the first byte), else the header's.
fn flags_of(a: &AddressMessage) -> AddressFlags {
    a.attributes
        .iter()
        .find_map(|x| match x {
            AddressAttribute::Flags(f) => Some(*f),
            _ => None,
        })
        .unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(a.header.flags.bits())))
}

/// The RTM_NEWADDR that puts `old` back on device `index`, now called `name`.
fn readd_message(old: &AddressMessage, index: u32, host_name: &str, name: &str) -> AddressMessage {
    let flags = flags_of(old) & KEPT_FLAGS;
    let mut m = AddressMessage::default();
    m.header.family = old.header.family;
    m.header.prefix_len = old.header.prefix_len;
    m.header.scope = old.header.scope;
    m.header.index = index;
    // Every kept flag lies past what the header's byte can hold but Nodad and Homeaddress.
    m.header.flags = AddressHeaderFlags::from_bits_truncate(flags.bits() as u8);
    for a in &old.attributes {
        match a {
            AddressAttribute::Address(_)
            | AddressAttribute::Local(_)
            | AddressAttribute::Broadcast(_)
            | AddressAttribute::RoutePriority(_)
            | AddressAttribute::Protocol(_) => m.attributes.push(a.clone()),
            // An alias label ("eth0:1") follows the device's new name; the plain label is
            // the device name, which the kernel fills in.
            AddressAttribute::Label(l) => {
                if let Some(alias) = l
                    .strip_prefix(host_name)
                    .filter(|rest| rest.starts_with(':'))
                    .map(|rest| format!("{name}{rest}"))
                    .filter(|n| n.len() <= MAX_NAME)
                {
                    m.attributes.push(AddressAttribute::Label(alias));
                }
            }
            _ => {}
        }
    }
    m.attributes.push(AddressAttribute::Flags(flags));
    m
}

/// "10.0.0.1/24", for errors.
fn describe(a: &AddressMessage) -> String {
    let ip: Option<IpAddr> = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let ip = ip.or_else(|| {
        a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    });
    match ip {
        Some(ip) => format!("address {ip}/{}", a.header.prefix_len),
        None => "an address".into(),
    }
}

fn move_op(from: &str, to: &str) -> String {
    format!("move {from} into the container's network namespace as {to}")
}

fn op_err(op: impl Into<String>, source: io::Error) -> Error {
    Error::io(format!("linux.netDevices: {}", op.into()), source)
}

/// The kernel's answer as its errno text ("File exists"), keeping the error kind.
fn kernel_error(e: Errno) -> io::Error {
    io::Error::new(io::Error::from_raw_os_error(e as i32).kind(), e.desc())
}

fn malformed(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed netlink reply: {what}"),
    )
}

/// A NETLINK_ROUTE socket of one network namespace, for one request at a time.
struct Rtnl {
    sock: Socket,
    seq: u32,
}

impl Rtnl {
    /// A socket in the caller's network namespace.
    fn open() -> io::Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { sock, seq: 0 })
    }

    /// A socket in the network namespace `netns`: the process enters it, makes the socket
    /// (which stays bound to that namespace) and comes back, on error too.
    fn open_in(netns: BorrowedFd) -> Result<Rtnl> {
        let home = open(
            "/proc/thread-self/ns/net",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| "linux.netDevices: open the host's network namespace".into())?;
        setns(netns, CloneFlags::CLONE_NEWNET)
            .ctx(|| "linux.netDevices: enter the container's network namespace".into())?;
        let sock = Rtnl::open();
        setns(home.as_fd(), CloneFlags::CLONE_NEWNET)
            .ctx(|| "linux.netDevices: return to the host's network namespace".into())?;
        sock.map_err(|e| {
            op_err(
                "open a netlink socket in the container's network namespace",
                e,
            )
        })
    }

    /// The index of the device called `name`.
    fn link_index(&mut self, name: &str) -> io::Result<u32> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let replies = self.request(RouteNetlinkMessage::GetLink(msg), 0)?;
        replies
            .into_iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })
            .ok_or_else(|| kernel_error(Errno::ENODEV))
    }

    /// Every device of the namespace: index to name.
    fn link_names(&mut self) -> io::Result<HashMap<u32, String>> {
        let replies = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => {
                    let name = l.attributes.into_iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n),
                        _ => None,
                    })?;
                    Some((l.header.index, name))
                }
                _ => None,
            })
            .collect())
    }

    /// Every address of every device of the namespace, of any family.
    fn addresses(&mut self) -> io::Result<Vec<AddressMessage>> {
        let replies = self.dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(a) => Some(a),
                _ => None,
            })
            .collect())
    }

    /// A dump, asked again if the kernel reports that it changed while it was read.
    fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..5 {
            let (replies, interrupted) = self.exchange(msg.clone(), NLM_F_DUMP)?;
            if !interrupted {
                return Ok(replies);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "the kernel's list kept changing while it was read",
        ))
    }

    /// One request with an acknowledgement; the replies that came before it.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_ACK | flags).map(|(r, _)| r)
    }

    /// Sends `msg` and reads until the acknowledgement, the error or the end of the dump.
    /// Also says whether a dump was interrupted (NLM_F_DUMP_INTR).
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<(Vec<RouteNetlinkMessage>, bool)> {
        self.seq = self.seq.wrapping_add(1);
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        let sent = self.sock.send(&buf, 0)?;
        if sent != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the netlink request was cut short",
            ));
        }
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let data = match self.sock.recv_from_full() {
                Ok((data, _)) => data,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut off = 0;
            while off < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                    .map_err(malformed)?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(malformed("a message of length 0"));
                }
                off = off.saturating_add(len.next_multiple_of(4));
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok((out, interrupted)),
                            Some(c) => Err(kernel_error(Errno::from_raw(-c.get()))),
                        }
                    }
                    NetlinkPayload::Done(d) if d.code < 0 => {
                        return Err(kernel_error(Errno::from_raw(-d.code)))
                    }
                    NetlinkPayload::Done(_) => return Ok((out, interrupted)),
                    NetlinkPayload::Overrun(_) => return Err(malformed("overrun")),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::AddressFamily;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespace};
    use std::net::Ipv4Addr;

    fn linux(devices: &[(&str, Option<&str>)], netns: bool) -> (Linux, Namespaces) {
        let mut map = HashMap::new();
        for (host, name) in devices {
            let mut d = LinuxNetDevice::default();
            d.set_name(name.map(str::to_string));
            map.insert(host.to_string(), d);
        }
        let mut list = Vec::new();
        if netns {
            let mut n = LinuxNamespace::default();
            n.set_typ(LinuxNamespaceType::Network);
            list.push(n);
        }
        let l = LinuxBuilder::default()
            .net_devices(map)
            .namespaces(list.clone())
            .build()
            .unwrap();
        (l, Namespaces::from_spec(&list).unwrap())
    }

    fn check_of(devices: &[(&str, Option<&str>)]) -> std::result::Result<(), (String, String)> {
        let (l, ns) = linux(devices, true);
        check(&l, &ns)
    }

    #[test]
    fn a_network_namespace_is_required() {
        let (l, ns) = linux(&[("dummy0", None)], false);

        let (field, reason) = check(&l, &ns).unwrap_err();

        assert_eq!(field, "linux.netDevices");
        assert!(reason.contains("network namespace"), "{reason}");
    }

    #[test]
    fn no_devices_need_no_network_namespace() {
        let (l, ns) = linux(&[], false);

        assert_eq!(check(&l, &ns), Ok(()));
    }

    #[test]
    fn good_names_pass() {
        assert_eq!(
            check_of(&[
                ("dummy0", Some("eth0")),
                ("dummy1", None),
                ("dummy2", Some("")),
                ("d3", Some("net%d")),
                ("d4", Some("net%d")),
                ("d5", Some("a%dz")),
            ]),
            Ok(())
        );
    }

    #[test]
    fn bad_target_names_name_the_field() {
        for bad in [
            "sixteen-bytes-xx",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "e%d%d",
            "e%s",
            "e%",
        ] {
            let (field, reason) = check_of(&[("dummy0", Some(bad))]).unwrap_err();
            assert_eq!(field, "linux.netDevices[\"dummy0\"].name", "{bad:?}");
            assert!(!reason.is_empty());
        }
    }

    #[test]
    fn a_template_host_name_is_refused() {
        let (field, reason) = check_of(&[("eth%d", None)]).unwrap_err();

        assert_eq!(field, "linux.netDevices[\"eth%d\"]");
        assert!(reason.contains("template"), "{reason}");
    }

    #[test]
    fn two_devices_with_one_name_are_refused() {
        let (field, reason) = check_of(&[("a0", Some("eth0")), ("eth0", None)]).unwrap_err();

        assert_eq!(field, "linux.netDevices[\"eth0\"].name");
        assert!(reason.contains("\"a0\""), "{reason}");
    }

    #[test]
    fn templates_fit_what_the_kernel_makes() {
        assert!(fits("eth%d", "eth0"));
        assert!(fits("eth%d", "eth12"));
        assert!(fits("a%dz", "a3z"));
        assert!(!fits("eth%d", "eth"));
        assert!(!fits("eth%d", "ethx"));
        assert!(fits("eth0", "eth0"));
        assert!(!fits("eth0", "eth1"));
    }

    fn addr(index: u32, scope: AddressScope, flags: AddressFlags) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = 24;
        m.header.index = index;
        m.header.scope = scope;
        m.attributes
            .push(AddressAttribute::Local(Ipv4Addr::new(10, 0, 0, 1).into()));
        m.attributes
            .push(AddressAttribute::Address(Ipv4Addr::new(10, 0, 0, 1).into()));
        m.attributes
            .push(AddressAttribute::Broadcast(Ipv4Addr::new(10, 0, 0, 255)));
        m.attributes
            .push(AddressAttribute::Label("dummy0:web".into()));
        m.attributes.push(AddressAttribute::Flags(flags));
        m
    }

    #[test]
    fn only_permanent_global_addresses_of_the_device_are_kept() {
        let perm = AddressFlags::Permanent;
        let all = [
            addr(3, AddressScope::Universe, perm),
            addr(3, AddressScope::Link, perm),
            addr(3, AddressScope::Universe, AddressFlags::empty()),
            addr(4, AddressScope::Universe, perm),
        ];

        let kept = keep_addresses(&all, 3);

        assert_eq!(kept, vec![all[0].clone()]);
    }

    #[test]
    fn an_address_is_added_back_with_its_prefix_and_broadcast() {
        let old = addr(
            3,
            AddressScope::Universe,
            AddressFlags::Permanent | AddressFlags::Nodad | AddressFlags::Secondary,
        );

        let new = readd_message(&old, 7, "dummy0", "eth0");

        assert_eq!(new.header.index, 7);
        assert_eq!(new.header.prefix_len, 24);
        assert_eq!(new.header.family, AddressFamily::Inet);
        assert!(new
            .attributes
            .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 0, 0, 255))));
        assert!(new
            .attributes
            .contains(&AddressAttribute::Label("eth0:web".into())));
        assert!(new
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
        assert_eq!(new.header.flags, AddressHeaderFlags::Nodad);
    }

    #[test]
    fn kernel_errors_read_as_text() {
        let e = kernel_error(Errno::EEXIST);

        assert_eq!(e.to_string(), "File exists");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    }
}
