//! Value parsers for command-line flags (used by clap): durations, headers, CPU lists,
//! source-address sets. Each error says what was expected.

use std::net::IpAddr;
use std::time::Duration;

/// Parses `500ms`, `30s`, `5m`, `1h30m`, `1.5s` or a bare number of seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration `{s}` (examples: 500ms, 30s, 5m, 1h30m)");
    let s = s.trim();
    if s.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return checked(Duration::try_from_secs_f64(secs).map_err(|_| err())?, s);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_end == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_end].parse().map_err(|_| err())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    checked(Duration::try_from_secs_f64(total).map_err(|_| err())?, s)
}

/// Longest duration any flag accepts: 30 days (keeps µs arithmetic far from overflow).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

fn checked(d: Duration, s: &str) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!("duration `{s}` is longer than the 30-day maximum"));
    }
    Ok(d)
}

/// Parses a `-H` or `--auth-header` value, `Name: value`: an HTTP token name, and a value (trimmed)
/// without CR, LF or NUL.
pub fn header(s: &str) -> Result<(String, String), String> {
    // Header values may be secrets and may hold line breaks: errors never show them.
    let (name, value) = s.split_once(':').ok_or_else(|| {
        "invalid header: no `:` between its name and value (expected 'Name: value'; the value is not shown)"
            .to_owned()
    })?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        // Up to the first space or control character: what follows may be a value.
        let shown: String = name
            .chars()
            .take_while(|c| !c.is_whitespace() && !c.is_control())
            .collect();
        let rest = if shown.len() < name.len() {
            "…, the rest not shown"
        } else {
            ""
        };
        return Err(format!(
            "invalid header name `{shown}`{rest} (letters, digits and -_. only; write 'Name: value')"
        ));
    }
    let value = value.trim();
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!(
            "header `{name}` value contains a line break or NUL"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// A parsed CPU list (a newtype so clap treats it as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// A parsed set of source addresses (a newtype so clap treats it as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpList(pub Vec<IpAddr>);

/// Parses a CPU list like `0,2-3`.
pub fn cpu_list(s: &str) -> Result<CpuList, String> {
    let err = || format!("invalid CPU list `{s}` (examples: 0  0,2  1-3  0,2-3)");
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<usize>().map_err(|_| err())?,
                b.parse::<usize>().map_err(|_| err())?,
            ),
            None => {
                let a = part.parse::<usize>().map_err(|_| err())?;
                (a, a)
            }
        };
        if a > b || b - a > 4096 {
            return Err(err());
        }
        for c in a..=b {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(CpuList(out))
}

/// Parses source addresses: `a,b`, a range `127.0.0.1-127.0.0.32` or `fd00::1-fd00::40`, or
/// CIDR `127.0.0.0/27` or `fd00::/120` (at most 65,536 addresses each).
pub fn source_ips(s: &str) -> Result<IpList, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if let Some((a, b)) = part.split_once('-') {
            let (a, b) = (ip(a, s)?, ip(b, s)?);
            if a.is_ipv4() != b.is_ipv4() {
                return Err(format!("range `{part}` mixes IPv4 and IPv6"));
            }
            let (lo, hi) = (bits(a), bits(b));
            if lo > hi {
                return Err(format!("range `{part}` runs backwards"));
            }
            if hi - lo >= 65536 {
                return Err(format!("range `{part}` has more than 65536 addresses"));
            }
            out.extend((lo..=hi).map(|v| from_bits(v, a.is_ipv4())));
        } else if let Some((net, prefix)) = part.split_once('/') {
            let base = ip(net, s)?;
            let width = if base.is_ipv4() { 32 } else { 128 };
            let prefix: u32 = prefix
                .parse()
                .ok()
                .filter(|&b| b <= width && width - b <= 16)
                .ok_or_else(|| {
                    format!(
                        "CIDR prefix in `{part}` must be between /{} and /{width} (at most 65536 addresses)",
                        width - 16
                    )
                })?;
            let host = width - prefix;
            let span = (1u128 << host) - 1;
            let first = bits(base) & !span;
            let last = first | span;
            // Skip the network (IPv4 and IPv6: the subnet-router anycast) and IPv4's broadcast
            // address, except on the two narrowest prefixes.
            let (lo, hi) = match (host, base.is_ipv4()) {
                (0 | 1, _) => (first, last),
                (_, true) => (first + 1, last - 1),
                (_, false) => (first + 1, last),
            };
            out.extend((lo..=hi).map(|v| from_bits(v, base.is_ipv4())));
        } else {
            out.push(
                part.parse::<IpAddr>()
                    .map_err(|_| format!("invalid address `{part}` in `{s}`"))?,
            );
        }
    }
    if out.is_empty() {
        return Err("no source addresses given".into());
    }
    Ok(IpList(out))
}

fn ip(s: &str, whole: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse::<IpAddr>()
        .map_err(|_| format!("invalid address `{}` in `{whole}`", s.trim()))
}

/// An address as a number (IPv4 in the low 32 bits).
fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_bits(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::from((v as u32).to_be_bytes())
    } else {
        IpAddr::from(v.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("20").unwrap(), Duration::from_secs(20));
        for bad in ["", "s", "5x", "-1s", "1s5", "ms", "1e13", "31d", "800h"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_cpus_and_sources() {
        assert_eq!(
            header("Authorization: Bearer x:y").unwrap(),
            ("Authorization".into(), "Bearer x:y".into())
        );
        assert!(header("NoColon").is_err());
        // Neither a secret nor a line break reaches the message.
        let e = header("Authorization Bearer s3cr3t\r\nX-Evil: 1").unwrap_err();
        assert!(!e.contains("s3cr3t") && !e.contains('\n'), "{e}");
        let e = header("Bad\r\nName: v").unwrap_err();
        assert!(!e.contains('\n') && e.contains("`Bad`"), "{e}");
        assert!(header("Bad Name: v").is_err());
        assert_eq!(cpu_list("0,2-3,2").unwrap().0, vec![0, 2, 3]);
        assert!(cpu_list("3-1").is_err());
        assert!(cpu_list("a").is_err());
        let r = source_ips("127.0.0.1-127.0.0.4").unwrap().0;
        assert_eq!(r.len(), 4);
        assert_eq!(r[3], "127.0.0.4".parse::<IpAddr>().unwrap());
        let c = source_ips("127.0.0.0/29").unwrap().0;
        assert_eq!(c.first(), Some(&"127.0.0.1".parse::<IpAddr>().unwrap()));
        assert_eq!(c.len(), 6);
        assert_eq!(source_ips("::1,::2").unwrap().0.len(), 2);
        assert!(source_ips("127.0.0.5-127.0.0.1").is_err());
        assert!(source_ips("10.0.0.0/8").is_err());
        // IPv6 ranges and CIDR, bounded the same way.
        let v6 = source_ips("fd00::1-fd00::4").unwrap().0;
        assert_eq!(v6.len(), 4);
        assert_eq!(v6[3], "fd00::4".parse::<IpAddr>().unwrap());
        let c6 = source_ips("fd00::/120").unwrap().0;
        assert_eq!(
            (c6.len(), c6[0]),
            (255, "fd00::1".parse::<IpAddr>().unwrap())
        );
        assert_eq!(source_ips("fd00::5/128").unwrap().0.len(), 1);
        assert!(source_ips("fd00::/64").unwrap_err().contains("/112"));
        assert!(source_ips("127.0.0.1-::2").unwrap_err().contains("mixes"));
        assert!(source_ips("fd00::9-fd00::1").is_err());
    }
}
