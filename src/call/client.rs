//! The client's address: the peer, or the forwarded-for address when the peer is a
//! configured trusted proxy (never from anyone else, or any client could pick its own key).

use std::net::IpAddr;

use http::HeaderMap;

/// The client address of a call that `peer` sent with `headers`.
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted_proxies: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?;
    if trusted_proxies.is_empty() || !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    // Walk X-Forwarded-For from the right, skipping our own proxies: the first address
    // not in the trusted set is the one a trusted proxy saw connect.
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted_proxies.contains(&ip) => continue,
            Ok(ip) => return Some(ip),
            Err(_) => break,
        }
    }
    Some(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(peer: &str, xff: Option<&str>, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
        let mut headers = HeaderMap::new();
        if let Some(x) = xff {
            headers.insert("x-forwarded-for", x.parse().unwrap());
        }
        client_ip(Some(peer.parse().unwrap()), &headers, trusted_proxies)
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(client("192.0.2.9", Some("1.2.3.4"), &[proxy]), Some(other));
        assert_eq!(client("192.0.2.9", Some("1.2.3.4"), &[]), Some(other));
        assert_eq!(
            client("10.0.0.1", Some("1.2.3.4, 10.0.0.1"), &[proxy]),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(client("10.0.0.1", None, &[proxy]), Some(proxy));
    }
}
