//! The client's address: the peer, or the forwarded-for address when the peer is a
//! configured trusted proxy (never from anyone else, or any client could pick its own key).

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::Request;

/// Resolve the client address of `req`.
pub fn client_ip<B>(req: &Request<B>, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())?;
    if trusted_proxies.is_empty() || !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    // Walk X-Forwarded-For from the right, skipping our own proxies: the first address
    // not in the trusted set is the one a trusted proxy saw connect.
    let forwarded = req
        .headers()
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

    fn req(peer: &str, xff: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        r.extensions_mut().insert(ConnectInfo::<SocketAddr>(
            format!("{peer}:1234").parse().unwrap(),
        ));
        if let Some(x) = xff {
            r.headers_mut()
                .insert("x-forwarded-for", x.parse().unwrap());
        }
        r
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(
            client_ip(&req("192.0.2.9", Some("1.2.3.4")), &[proxy]),
            Some(other)
        );
        assert_eq!(
            client_ip(&req("192.0.2.9", Some("1.2.3.4")), &[]),
            Some(other)
        );
        assert_eq!(
            client_ip(&req("10.0.0.1", Some("1.2.3.4, 10.0.0.1")), &[proxy]),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(client_ip(&req("10.0.0.1", None), &[proxy]), Some(proxy));
    }
}
