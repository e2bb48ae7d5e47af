//! Fuzzes the PROXY header parser the way a connection uses it: the bytes arrive in
//! arbitrary chunks and everything received so far is parsed after each one.
//!
//! Input layout: byte 0 chooses whether a well-formed header (built from the next 38
//! bytes: version, addresses, ports) comes first, bytes 1..5 a cycle of chunk sizes
//! (1..=32); the rest is what the peer sends. Checked after every chunk: no panic; a
//! header's length is within what arrived and within `MAX_HEADER`; once a verdict is given
//! it stands, whatever arrives next; nothing is still undecided at `MAX_HEADER` bytes; and a
//! header built by `encode` parses back to the address it was built with, as a whole and
//! cut anywhere.
#![no_main]

use std::net::SocketAddr;

use evloop::proxy::{self, Parsed, Version};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 5;
const BUILT: usize = 38;

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER + BUILT {
        return;
    }
    let chunk_sizes: Vec<usize> = data[1..HEADER]
        .iter()
        .map(|&b| 1 + usize::from(b) % 32)
        .collect();
    let mut input = Vec::new();
    let mut built = None;
    if data[0] & 1 == 1 {
        let b = &data[HEADER..HEADER + BUILT];
        let version = if b[0] & 1 == 0 { Version::V1 } else { Version::V2 };
        let port = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let (source, destination): (SocketAddr, SocketAddr) = if b[0] & 2 == 0 {
            let ip = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
            ((ip(1), port(33)).into(), (ip(5), port(35)).into())
        } else {
            let ip = |i: usize| -> [u8; 16] { b[i..i + 16].try_into().unwrap() };
            ((ip(1), port(33)).into(), (ip(17), port(35)).into())
        };
        input = proxy::encode(version, source, destination);
        built = Some((input.len(), source));
    }
    input.extend_from_slice(&data[HEADER + BUILT..]);

    let mut verdict: Option<Parsed> = None;
    let mut end = 0;
    for size in chunk_sizes.iter().cycle() {
        if end == input.len() {
            break;
        }
        end = (end + size).min(input.len());
        let now = proxy::parse(&input[..end]);
        if let Parsed::Header { len, .. } = now {
            assert!(len <= end && len <= proxy::MAX_HEADER);
        }
        if end >= proxy::MAX_HEADER {
            assert_ne!(now, Parsed::Incomplete, "undecided at the limit");
        }
        match (&verdict, &now) {
            (None, _) => {}
            (Some(Parsed::Header { .. }), _) => assert_eq!(verdict.as_ref(), Some(&now)),
            (Some(Parsed::Invalid(_)), Parsed::Invalid(_)) => {}
            (Some(before), _) => panic!("{before:?} became {now:?}"),
        }
        if now != Parsed::Incomplete {
            verdict = Some(now);
        }
    }
    if let Some((len, source)) = built {
        assert_eq!(
            verdict,
            Some(Parsed::Header {
                len,
                source: Some(source)
            })
        );
    }
});
