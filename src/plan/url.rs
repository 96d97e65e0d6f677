//! `ws://` and `wss://` URLs: parsed and checked before anything connects.

use super::PlanError;

/// A parsed ws:// or wss:// URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// The scheme is `wss://` (in any case): connect with TLS; false for `ws://`.
    pub tls: bool,
    /// Host as written (name or address).
    pub host: String,
    /// Port (default 80, or 443 for wss://).
    pub port: u16,
    /// Path and query, at least "/".
    pub path: String,
}

impl Url {
    /// The `Host` header value: the host (an IPv6 address in brackets), with `:port` only when the
    /// port is not the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl Url {
    fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }
}

/// Parses `ws://host[:port][/path]` and `wss://...`.
pub fn parse_url(url: &str) -> Result<Url, PlanError> {
    let bad = |reason: &str| PlanError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("missing scheme"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "ws" => false,
        "wss" => true,
        _ => return Err(bad(&format!("unsupported scheme `{scheme}`"))),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    if authority.contains('@') {
        return Err(bad(
            "credentials in the URL are not supported; pass them with -H",
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed `[` in IPv6 host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("garbage after IPv6 host")),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("whitespace in host"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("whitespace in path (percent-encode it)"));
    }
    let port = match port {
        None if tls => 443,
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad(&format!("invalid port `{p}`")))?,
    };
    Ok(Url {
        tls,
        host,
        port,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:9001/a/b?x=1").unwrap(),
            Url {
                tls: false,
                host: "127.0.0.1".into(),
                port: 9001,
                path: "/a/b?x=1".into()
            }
        );
        assert_eq!(
            parse_url("WS://localhost").unwrap(),
            Url {
                tls: false,
                host: "localhost".into(),
                port: 80,
                path: "/".into()
            }
        );
        assert_eq!(
            parse_url("ws://[::1]:81?q").unwrap(),
            Url {
                tls: false,
                host: "::1".into(),
                port: 81,
                path: "/?q".into()
            }
        );
        assert_eq!(
            parse_url("ws://[::1]:81").unwrap().host_header(),
            "[::1]:81"
        );
        let w = parse_url("wss://example.com/x").unwrap();
        assert_eq!(
            (w.tls, w.port, w.host_header()),
            (true, 443, "example.com".into())
        );
        assert_eq!(parse_url("wss://h:8443/").unwrap().host_header(), "h:8443");
        for bad in [
            "http://x/",
            "x:80",
            "ws://",
            "ws://h:0/",
            "ws://h:99999/",
            "ws://u@h/",
            "ws://h/a b",
            "ws://[::1/",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(matches!(e, PlanError::BadUrl { .. }), "{bad}: {e}");
        }
    }
}
