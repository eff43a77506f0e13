//! SPDY/3.1, as far as Kubernetes streaming needs it: framing ([`frame`]), header
//! compression ([`zlib`]) and a server-side connection with flow control ([`conn`]).

pub mod conn;
pub mod frame;
pub mod zlib;
