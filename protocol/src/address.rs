//! Endpoint addresses: where a client connects and where the proxy listens.
//!
//! Text forms (parsed by [`Address::from_str`](std::str::FromStr) and printed
//! by [`Display`](std::fmt::Display), which round-trip):
//!
//! | text                  | meaning                                                         |
//! |-----------------------|-----------------------------------------------------------------|
//! | `unix:PATH`           | Unix stream socket at `PATH` (connect or listen)               |
//! | `vsock:CID:PORT`      | AF_VSOCK, connect to `CID` / `PORT` (or listen on that CID)    |
//! | `vsock:PORT`          | AF_VSOCK, listen on `PORT` for any CID (`VMADDR_CID_ANY`)       |
//! | `vsock-uds:PATH:PORT` | hybrid vsock (Firecracker / Cloud Hypervisor): connect to the Unix socket `PATH`, send `CONNECT PORT\n`, expect `OK …\n` |
//!
//! In `vsock-uds:` the *last* `:` separates the port, so `PATH` may itself
//! contain `:`. CIDs and ports are unsigned 32-bit decimal numbers.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where to connect or listen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix stream socket.
    Unix(PathBuf),
    /// AF_VSOCK: connect to `cid:port` (or, for a listener, bind that CID).
    Vsock {
        /// Context id of the peer (2 = host, 3.. = guests).
        cid: u32,
        /// vsock port.
        port: u32,
    },
    /// AF_VSOCK listener on `port` accepting any CID (`VMADDR_CID_ANY`).
    VsockListen {
        /// vsock port.
        port: u32,
    },
    /// Hybrid vsock over a Unix socket exposed by the VMM (client only).
    VsockUds {
        /// The VMM's Unix socket.
        path: PathBuf,
        /// Guest vsock port to ask the VMM to connect to.
        port: u32,
    },
}

/// Why an address string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No known scheme prefix.
    #[error(
        "address {0:?} has no known scheme (expected unix:PATH, vsock:CID:PORT, vsock:PORT or vsock-uds:PATH:PORT)"
    )]
    UnknownScheme(String),
    /// A path component was empty.
    #[error("address {0:?} has an empty path")]
    EmptyPath(String),
    /// A CID or port was not an unsigned 32-bit decimal number.
    #[error("address {addr:?}: {what} {value:?} is not a number in 0..=4294967295")]
    BadNumber {
        /// The whole address.
        addr: String,
        /// "cid" or "port".
        what: &'static str,
        /// The offending text.
        value: String,
    },
    /// `vsock-uds:` without a `:PORT` suffix.
    #[error("address {0:?}: expected vsock-uds:PATH:PORT")]
    MissingPort(String),
    /// `vsock:` with too many components.
    #[error("address {0:?}: expected vsock:CID:PORT or vsock:PORT")]
    BadVsock(String),
}

fn number(addr: &str, what: &'static str, value: &str) -> Result<u32, AddressError> {
    // `u32::from_str` accepts a leading '+'; we want plain digits only.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddressError::BadNumber {
            addr: addr.to_owned(),
            what,
            value: value.to_owned(),
        });
    }
    value.parse().map_err(|_| AddressError::BadNumber {
        addr: addr.to_owned(),
        what,
        value: value.to_owned(),
    })
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddressError::EmptyPath(s.to_owned()));
            }
            Ok(Address::Unix(PathBuf::from(path)))
        } else if let Some(rest) = s.strip_prefix("vsock-uds:") {
            let (path, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| AddressError::MissingPort(s.to_owned()))?;
            if path.is_empty() {
                return Err(AddressError::EmptyPath(s.to_owned()));
            }
            Ok(Address::VsockUds {
                path: PathBuf::from(path),
                port: number(s, "port", port)?,
            })
        } else if let Some(rest) = s.strip_prefix("vsock:") {
            let parts: Vec<&str> = rest.split(':').collect();
            match parts.as_slice() {
                [port] => Ok(Address::VsockListen {
                    port: number(s, "port", port)?,
                }),
                [cid, port] => Ok(Address::Vsock {
                    cid: number(s, "cid", cid)?,
                    port: number(s, "port", port)?,
                }),
                _ => Err(AddressError::BadVsock(s.to_owned())),
            }
        } else {
            Err(AddressError::UnknownScheme(s.to_owned()))
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Address::VsockListen { port } => write!(f, "vsock:{port}"),
            Address::VsockUds { path, port } => write!(f, "vsock-uds:{}:{port}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert_eq!(
            "unix:/run/telebpf.sock".parse::<Address>().unwrap(),
            Address::Unix("/run/telebpf.sock".into())
        );
        assert_eq!(
            "vsock:3:5000".parse::<Address>().unwrap(),
            Address::Vsock { cid: 3, port: 5000 }
        );
        assert_eq!(
            "vsock:5000".parse::<Address>().unwrap(),
            Address::VsockListen { port: 5000 }
        );
        assert_eq!(
            "vsock-uds:/tmp/a:b/v.sock:5000".parse::<Address>().unwrap(),
            Address::VsockUds {
                path: "/tmp/a:b/v.sock".into(),
                port: 5000
            }
        );
        assert_eq!(
            "vsock:4294967295:4294967295".parse::<Address>().unwrap(),
            Address::Vsock {
                cid: u32::MAX,
                port: u32::MAX
            }
        );
    }

    #[test]
    fn round_trip() {
        for s in [
            "unix:/run/telebpf.sock",
            "unix:relative/path with space",
            "unix:/a:b",
            "vsock:2:1024",
            "vsock:0:0",
            "vsock:77",
            "vsock-uds:/var/lib/fc/v.sock:5000",
            "vsock-uds:/x:y:z:1",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
        }
    }

    #[test]
    fn rejects() {
        for s in [
            "",
            "tcp:1.2.3.4:5",
            "unix:",
            "vsock:",
            "vsock:1:2:3",
            "vsock:x:2",
            "vsock:1:+2",
            "vsock:1:-2",
            "vsock:4294967296",
            "vsock-uds:/p",
            "vsock-uds::5",
            "vsock-uds:/p:",
            "vsock-uds:/p:port",
        ] {
            let e = s.parse::<Address>().unwrap_err();
            assert!(!e.to_string().is_empty(), "{s}");
        }
    }
}
