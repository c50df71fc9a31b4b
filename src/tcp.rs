//! TCP connections as the kernel lists them in a network namespace
//! (`/proc/net/tcp` and `/proc/net/tcp6`): which are established, and to
//! whom. Pure: the text is read elsewhere (through the engine).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The kernel's state number for an established connection.
const ESTABLISHED: &str = "01";

/// The remote ends of the established connections in the text of
/// `/proc/net/tcp` and `/proc/net/tcp6` (either, or both one after the
/// other). Header lines and lines that do not parse are skipped. An
/// IPv4-mapped IPv6 address is given as IPv4, so either file matches an
/// IPv4 peer.
pub fn established_remotes(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            // sl local_address rem_address st ...
            let mut fields = line.split_whitespace();
            let _slot = fields.next()?.strip_suffix(':')?;
            let _local = fields.next()?;
            let remote = fields.next()?;
            (fields.next()? == ESTABLISHED).then_some(())?;
            parse_address(remote)
        })
        .collect()
}

/// How many established connections go to one of `peers` on `port`.
pub fn established_to(text: &str, peers: &[IpAddr], port: u16) -> usize {
    established_remotes(text)
        .iter()
        .filter(|remote| remote.port() == port && peers.contains(&remote.ip()))
        .count()
}

/// `0100007F:0BB8` (tcp) or 32 hex digits and a port (tcp6). The kernel
/// prints each 32-bit word of the address as a number in the host's byte
/// order; engines run on little-endian machines (x86-64, arm64), so each
/// word's bytes are read back little-endian.
fn parse_address(field: &str) -> Option<SocketAddr> {
    let (address, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = |hex: &str| -> Option<Vec<[u8; 4]>> {
        (0..hex.len() / 8)
            .map(|i| {
                let word = hex.get(i * 8..i * 8 + 8)?;
                u32::from_str_radix(word, 16).ok().map(u32::to_le_bytes)
            })
            .collect()
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(*words(address)?.first()?)),
        32 => {
            let bytes: Vec<u8> = words(address)?.concat();
            let bytes: [u8; 16] = bytes.try_into().ok()?;
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From nginx's container: its workers' connections to two app
    /// containers (172.18.0.4 and .5, port 3000), one of them closing
    /// (TIME_WAIT, 06), a listening socket (0A), and a client's connection
    /// to nginx's port 80.
    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 020012AC:B5E2 040012AC:0BB8 01 00000000:00000000 00:00000000 00000000   101        0 2 1 0 20 4 30 10 -1
   2: 020012AC:B5E4 050012AC:0BB8 01 00000000:00000000 00:00000000 00000000   101        0 3 1 0 20 4 30 10 -1
   3: 020012AC:B5E6 040012AC:0BB8 06 00000000:00000000 03:00000F2C 00000000     0        0 0 3 0
   4: 020012AC:0050 010012AC:D2A4 01 00000000:00000000 00:00000000 00000000   101        0 4 1 0 20 4 30 10 -1
";

    /// tcp6: an IPv4-mapped connection to 172.18.0.4:3000 and one to a
    /// real IPv6 peer, fd00::4 port 3000.
    const TCP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF0000020012AC:B5F0 0000000000000000FFFF0000040012AC:0BB8 01 00000000:00000000 00:00000000 00000000   101        0 5 1 0 20 4 30 10 -1
   1: 000000FD000000000000000002000000:B5F2 000000FD000000000000000004000000:0BB8 01 00000000:00000000 00:00000000 00000000   101        0 6 1 0 20 4 30 10 -1
";

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn established_connections_name_their_remote_end() {
        let remotes = established_remotes(TCP);
        assert_eq!(
            remotes,
            [
                "172.18.0.4:3000".parse().unwrap(),
                "172.18.0.5:3000".parse().unwrap(),
                "172.18.0.1:53924".parse().unwrap(),
            ]
        );
        let remotes = established_remotes(TCP6);
        assert_eq!(remotes[0], "172.18.0.4:3000".parse().unwrap());
        assert_eq!(remotes[1], "[fd00::4]:3000".parse().unwrap());
    }

    #[test]
    fn only_established_connections_to_the_peers_port_count() {
        let both = format!("{TCP}{TCP6}");
        assert_eq!(established_to(&both, &[ip("172.18.0.4")], 3000), 2);
        assert_eq!(
            established_to(&both, &[ip("172.18.0.4"), ip("172.18.0.5")], 3000),
            3
        );
        assert_eq!(established_to(&both, &[ip("fd00::4")], 3000), 1);
        // Another port of the same container, and nobody at all.
        assert_eq!(established_to(&both, &[ip("172.18.0.4")], 80), 0);
        assert_eq!(established_to(&both, &[], 3000), 0);
    }

    #[test]
    fn what_does_not_parse_is_skipped() {
        for junk in [
            "",
            "garbage",
            "   1: 020012AC:B5E2 040012AC 01",
            "   1: 020012AC:B5E2 0400XYAC:0BB8 01",
            "   1: 020012AC:B5E2 040012AC:0BB8",
            "   1: 020012AC:B5E2 0400:0BB8 01",
            "   1: 020012AC:B5E2 040012AC:FFFFF 01",
        ] {
            assert!(established_remotes(junk).is_empty(), "{junk:?}");
        }
    }
}
