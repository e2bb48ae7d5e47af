//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer sends at
//! the start of each TCP connection to say whose connection it really is.
//!
//! Behind a balancer every connection comes from the balancer's address. With
//! `--proxy-protocol` the server expects each TCP connection to begin with a PROXY header
//! (text version 1 or binary version 2, both accepted), and from then on the address in it
//! is the client's address: in the logs and for `--max-connections-per-ip`. The
//! specification says a receiver must not start processing before the whole header has
//! arrived and must drop a connection whose header is invalid, so the greeting waits for
//! it, and a connection without a valid one is closed without a greeting. A header is
//! never a line of the protocol.
//!
//! This module owns the bytes: [`parse`] says whether what arrived so far is a whole
//! header, not yet one, or never one, and [`encode`] writes one (for `loadgen` and the
//! tests). The parsing itself is the `ppp` crate's; this module adds the bounds a server
//! needs and the crate leaves to its caller: a largest header, and a verdict as soon as
//! the bytes rule a header out. Like [`protocol`](crate::protocol) it does no I/O and reads
//! no clock: the connection reads, and the loop times it out after [`HEADER_TIMEOUT`].

use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2;
use ppp::PartialResult;

/// The longest header accepted, in bytes. A version 1 header is at most 107 bytes and a
/// version 2 address block at most 216; the rest of a version 2 header is optional
/// type-length-value fields this server does not read (a balancer's unique id, TLS
/// details), which fit in far less. A header that says it is longer is refused at once
/// rather than waited for, so a connection holds at most this much before it is served.
pub const MAX_HEADER: usize = 4096;

/// How long a connection may take to send its whole header, from its accept. A balancer
/// sends the header in its first segment, so waiting at all means a lost segment (3 s
/// covers the first two retransmissions) or a client that is not a balancer.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// The twelve bytes that begin every version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// What the bytes received so far are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The start of a header, or too little to tell: wait for more.
    Incomplete,
    /// A whole header, the first `len` bytes of the input; what follows is the client's.
    Header {
        /// Bytes the header took.
        len: usize,
        /// The client's address. `None` when the header carries none: the `LOCAL` command
        /// (a balancer's own health check), `UNKNOWN`, or an address family other than IP.
        /// Then the connection's own peer address stands.
        source: Option<SocketAddr>,
    },
    /// Never a valid header, whatever follows; says why.
    Invalid(String),
}

/// Parses the start of a connection's input. The same input always gives the same answer,
/// and a prefix of a whole header is always `Incomplete`: so the caller may parse again
/// after each read, with everything received so far.
pub fn parse(input: &[u8]) -> Parsed {
    if input.first() == Some(&V2_SIGNATURE[0]) {
        parse_v2(input)
    } else {
        parse_v1(input)
    }
}

/// The text header is one line. The crate parses a whole line well but can misjudge a
/// part of one (it reads `PROXY TCP4 ... 99` as a port when `9999\r\n` is on its way),
/// so the line's end is found here first, and the start is checked byte by byte so that
/// anything else is refused at its first byte.
fn parse_v1(input: &[u8]) -> Parsed {
    const PREFIX: &[u8] = b"PROXY ";
    /// The longest version 1 header, `\r\n` included, from the specification.
    const LONGEST: usize = 107;
    let shown = input.len().min(PREFIX.len());
    if input[..shown] != PREFIX[..shown] {
        return Parsed::Invalid("no PROXY header: the connection began with other bytes".into());
    }
    let searched = &input[..input.len().min(LONGEST)];
    let Some(end) = searched.windows(2).position(|pair| pair == b"\r\n") else {
        if input.len() >= LONGEST {
            return Parsed::Invalid(format!("a version 1 header with no end in {LONGEST} bytes"));
        }
        return Parsed::Incomplete;
    };
    let len = end + 2;
    match ppp::v1::Header::try_from(&input[..len]) {
        Ok(header) => Parsed::Header {
            len,
            source: match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
                ppp::v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
                ppp::v1::Addresses::Unknown => None,
            },
        },
        Err(e) => Parsed::Invalid(format!("an invalid version 1 header: {e}")),
    }
}

/// The binary header says its length in its first 16 bytes, so the crate knows when it is
/// whole; what is added here is the refusal of one longer than [`MAX_HEADER`].
fn parse_v2(input: &[u8]) -> Parsed {
    if let Some(declared) = v2_declared_len(input) {
        if declared > MAX_HEADER {
            return Parsed::Invalid(format!(
                "a version 2 header of {declared} bytes, more than the {MAX_HEADER} accepted"
            ));
        }
    }
    match v2::Header::try_from(input) {
        Ok(header) => Parsed::Header {
            len: header.len(),
            source: match (header.command, header.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some((a.source_address, a.source_port).into())
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some((a.source_address, a.source_port).into())
                }
                // LOCAL (a health check), or an address family other than IP.
                _ => None,
            },
        },
        Err(e) if e.is_incomplete() => Parsed::Incomplete,
        Err(e) => Parsed::Invalid(format!("an invalid version 2 header: {e}")),
    }
}

/// The whole length a version 2 header declares, once its fixed part has arrived.
fn v2_declared_len(input: &[u8]) -> Option<usize> {
    let fixed = input.get(..16)?;
    if !fixed.starts_with(V2_SIGNATURE) {
        return None;
    }
    Some(16 + usize::from(u16::from_be_bytes([fixed[14], fixed[15]])))
}

/// Which header to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The text header, `PROXY TCP4 <source> <destination> <ports>\r\n`.
    V1,
    /// The binary header.
    V2,
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Version, String> {
        match s {
            "v1" | "1" => Ok(Version::V1),
            "v2" | "2" => Ok(Version::V2),
            _ => Err(format!(
                "unknown PROXY protocol version {s:?} (use v1 or v2)"
            )),
        }
    }
}

/// The header a balancer would send for a TCP connection from `source` to `destination`.
/// Both addresses must be of one family; a mixed pair is written as `UNKNOWN` (version 1)
/// or `LOCAL` (version 2), which the receiver answers as any client.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let same_family = source.is_ipv4() == destination.is_ipv4();
    match version {
        Version::V1 if same_family => ppp::v1::Addresses::from((source, destination))
            .to_string()
            .into_bytes(),
        Version::V1 => ppp::v1::Addresses::Unknown.to_string().into_bytes(),
        Version::V2 => {
            let (command, addresses) = if same_family {
                (
                    v2::Command::Proxy,
                    v2::Addresses::from((source, destination)),
                )
            } else {
                (v2::Command::Local, v2::Addresses::Unspecified)
            };
            v2::Builder::with_addresses(v2::Version::Two | command, v2::Protocol::Stream, addresses)
                .build()
                .expect("writing a header to memory cannot fail")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn both_versions_give_the_client_address_and_their_length() {
        let (from, to) = (addr("192.0.2.7:41000"), addr("127.0.0.1:9999"));
        for version in [Version::V1, Version::V2] {
            let mut input = encode(version, from, to);
            let len = input.len();
            input.extend_from_slice(b"hello\n");
            assert_eq!(
                parse(&input),
                Parsed::Header {
                    len,
                    source: Some(from)
                },
                "{version:?}"
            );
        }
        let v6 = (addr("[2001:db8::1]:5000"), addr("[::1]:9999"));
        assert_eq!(
            parse(&encode(Version::V1, v6.0, v6.1)),
            Parsed::Header {
                len: encode(Version::V1, v6.0, v6.1).len(),
                source: Some(v6.0)
            }
        );
        assert_eq!(
            encode(Version::V1, from, to),
            b"PROXY TCP4 192.0.2.7 127.0.0.1 41000 9999\r\n"
        );
    }

    #[test]
    fn local_and_unknown_carry_no_address() {
        let local = encode(Version::V2, addr("[::1]:1"), addr("127.0.0.1:2"));
        assert_eq!(
            parse(&local),
            Parsed::Header {
                len: 16,
                source: None
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\nhi\n"),
            Parsed::Header {
                len: 15,
                source: None
            }
        );
    }

    #[test]
    fn anything_else_is_refused_as_soon_as_it_shows() {
        for input in [
            &b"hello\n"[..],
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 1.2.3.4\r\n",
            b"PROXY TCP4 300.0.0.1 127.0.0.1 1 2\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c",
            b"\r\n\r\nX",
        ] {
            assert!(
                matches!(parse(input), Parsed::Invalid(_)),
                "{:?}: {:?}",
                String::from_utf8_lossy(input),
                parse(input)
            );
        }
        let endless_v1 = [b"PROXY TCP4 ".as_slice(), &[b'1'; 100]].concat();
        assert!(matches!(parse(&endless_v1), Parsed::Invalid(_)));
        let mut huge_v2 = encode(Version::V2, addr("1.2.3.4:1"), addr("5.6.7.8:2"));
        huge_v2[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(parse(&huge_v2[..16]), Parsed::Invalid(_)));
    }

    proptest! {
        /// Read by read, a header is `Incomplete` until its last byte arrives, whatever
        /// follows it.
        #[test]
        fn every_prefix_of_a_header_waits_for_more(
            v1 in any::<bool>(),
            a in any::<[u8; 4]>(), b in any::<[u8; 16]>(), port in any::<u16>(),
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let version = if v1 { Version::V1 } else { Version::V2 };
            let from = SocketAddr::from((a, port));
            let to = SocketAddr::from(([127, 0, 0, 1], 9999));
            let header = encode(version, from, to);
            for end in 0..header.len() {
                prop_assert_eq!(parse(&header[..end]), Parsed::Incomplete);
            }
            let mut input = header.clone();
            input.extend_from_slice(&rest);
            prop_assert_eq!(parse(&input), Parsed::Header { len: header.len(), source: Some(from) });
            let from6 = SocketAddr::from((b, port));
            let to6 = SocketAddr::from(([0u8; 16], 1));
            let header6 = encode(version, from6, to6);
            prop_assert_eq!(parse(&header6), Parsed::Header { len: header6.len(), source: Some(from6) });
        }

        /// Any bytes at all: no panic, and a verdict within the bytes allowed. A verdict,
        /// once given, stands whatever arrives next.
        #[test]
        fn any_input_gets_a_lasting_verdict_within_the_limit(
            input in proptest::collection::vec(any::<u8>(), 0..300),
            signature in any::<bool>(),
            more in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let input = if signature { [&V2_SIGNATURE[..], &input].concat() } else { input };
            let verdict = parse(&input);
            if input.len() >= MAX_HEADER {
                prop_assert_ne!(&verdict, &Parsed::Incomplete);
            }
            if verdict != Parsed::Incomplete {
                let longer = [&input[..], &more].concat();
                let later = parse(&longer);
                match (&verdict, &later) {
                    (Parsed::Header { .. }, Parsed::Header { .. }) => prop_assert_eq!(&verdict, &later),
                    (Parsed::Invalid(_), Parsed::Invalid(_)) => {}
                    _ => prop_assert!(false, "{:?} became {:?}", verdict, later),
                }
            }
            if let Parsed::Header { len, .. } = verdict {
                prop_assert!(len <= input.len() && len <= MAX_HEADER);
            }
        }
    }
}
