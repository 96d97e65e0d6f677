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
    // A fragment never goes to the server (RFC 3986 §3.5): it stays off the request line.
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
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
    // Template expressions (`{{line FILE}}`) have spaces of their own; what they render is
    // checked when the request is built.
    if without_expressions(&path)
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
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

/// `text` without its `{{...}}` template expressions (an unclosed `{{` stays).
fn without_expressions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else {
            break;
        };
        out.push_str(&rest[..open]);
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

/// `url` as reports and logs show it: every query-string value (and a bare query item)
/// replaced by `***`, whether written out or a template expression, since query strings
/// carry session ids and tokens. Names and the path stay.
pub fn redacted(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let items: Vec<String> = query
        .split('&')
        .map(|item| match item.split_once('=') {
            Some((name, _)) => format!("{name}=***"),
            None if item.is_empty() => String::new(),
            None => "***".to_owned(),
        })
        .collect();
    let mut out = format!("{base}?{}", items.join("&"));
    if fragment.is_some() {
        out.push_str("#***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://h/a?x=1#frag").unwrap().path,
            "/a?x=1",
            "no fragment on the request line"
        );
        assert_eq!(parse_url("ws://h:81#f").unwrap().path, "/");
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
        assert_eq!(
            parse_url("ws://h/q?id={{conn_id}}&s={{line s.txt}}")
                .unwrap()
                .path,
            "/q?id={{conn_id}}&s={{line s.txt}}"
        );
        for bad in [
            "http://x/",
            "x:80",
            "ws://",
            "ws://h:0/",
            "ws://h:99999/",
            "ws://u@h/",
            "ws://h/a b",
            "ws://[::1/",
            "ws://h/{{line a.txt}} x",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(matches!(e, PlanError::BadUrl { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn reports_show_no_query_value() {
        assert_eq!(redacted("ws://h:1/ws"), "ws://h:1/ws");
        assert_eq!(
            redacted("ws://h/q?clientId={{conn_id}}&session={{line s.txt}}&t=s3cret&flag"),
            "ws://h/q?clientId=***&session=***&t=***&***"
        );
        assert_eq!(redacted("wss://h/?a=1#frag"), "wss://h/?a=***#***");
        assert_eq!(without_expressions("/a{{line x y}}b{{c"), "/ab{{c");
    }
}
