//! Reading `/proc` and `/sys` files, and the parsers shared by several areas: single numbers
//! and kernel lists (`0-3,8`).

use std::fs;
use std::ops::RangeInclusive;
use std::path::Path;

use super::Reading;

/// Reads a whole file; the error names the path.
pub(crate) fn read_text(path: &Path) -> Reading<String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Reads `path` and parses it; a parse error is prefixed with the path.
pub(crate) fn read_with<T>(
    path: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Reading<T> {
    let text = read_text(Path::new(path))?;
    parse(&text).map_err(|e| format!("{path}: {e}"))
}

/// Parses a single-number sysctl such as `fs.nr_open`.
pub(crate) fn parse_u64(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.parse()
        .map_err(|_| format!("expected a number, found {t:?}"))
}

/// Parses a kernel list such as a `cpulist` (`0-3,8`) or `ip_local_reserved_ports`
/// (`8080,9000-9010`); an empty text is an empty list.
pub(crate) fn parse_cpulist(text: &str) -> Result<Vec<RangeInclusive<u32>>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|item| {
            let num = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("bad list item {item:?}"))
            };
            let (a, b) = match item.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let a = num(item)?;
                    (a, a)
                }
            };
            if a > b {
                return Err(format!("bad list item {item:?}: {a} > {b}"));
            }
            Ok(a..=b)
        })
        .collect()
}

/// Number of entries in a parsed list.
pub(crate) fn list_count(list: &[RangeInclusive<u32>]) -> u64 {
    list.iter()
        .map(|r| u64::from(*r.end()) - u64::from(*r.start()) + 1)
        .sum()
}

/// Writes a parsed list back in the kernel's form (`8080,9000-9010`).
pub(crate) fn format_list(list: &[RangeInclusive<u32>]) -> String {
    list.iter()
        .map(|r| {
            if r.start() == r.end() {
                r.start().to_string()
            } else {
                format!("{}-{}", r.start(), r.end())
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulist_parses_ranges_and_singles() {
        let l = parse_cpulist("0-3,8\n").unwrap();
        assert_eq!(l, vec![0..=3, 8..=8]);
        assert_eq!(list_count(&l), 5);
        assert_eq!(list_count(&parse_cpulist("0").unwrap()), 1);
        assert_eq!(list_count(&parse_cpulist("0-15,32-47").unwrap()), 32);
        assert!(parse_cpulist("\n").unwrap().is_empty());
        assert_eq!(
            format_list(&parse_cpulist("8080,9000-9010").unwrap()),
            "8080,9000-9010"
        );
    }

    #[test]
    fn cpulist_rejects_garbage() {
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("0-3,x").is_err());
        assert!(parse_cpulist("0-").is_err());
        assert!(parse_cpulist(",").is_err());
    }
}
