//! Web origins (`scheme://host[:port]`) as browsers send them in `Origin`, and as
//! `--allow-origin` and `--public-url` name them.

/// A web origin: scheme, host and port (the default port of the scheme when not written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, with the port defaulting to `default`.
fn authority(text: &str, default: u16) -> Option<(String, u16)> {
    let text = text.trim();
    let (host, port) = match text.rsplit_once(':') {
        // A colon inside brackets belongs to an IPv6 address, not to a port.
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (text, None),
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
    valid.then(|| (host.to_ascii_lowercase(), port))
}

impl Origin {
    /// `http://host[:port]` or `https://…`, as browsers send it (a trailing `/` is allowed).
    pub fn parse(text: &str) -> Result<Origin, String> {
        let bad = || {
            format!(
                "`{text}` is not an origin: write it as scheme://host[:port], e.g. http://localhost:3000"
            )
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad());
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad());
        }
        let (host, port) = authority(rest, default_port(&scheme)).ok_or_else(bad)?;
        Ok(Origin { scheme, host, port })
    }

    /// The origin of a base URL such as `--public-url` (its path is ignored).
    pub fn of_url(url: &str) -> Option<Origin> {
        let (scheme, rest) = url.split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        Origin::parse(&format!("{scheme}://{}", &rest[..end])).ok()
    }

    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host.ends_with(".localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Where a request was sent, from its `Host` (`host[:port]`), taken with `scheme`: behind
    /// a proxy the server cannot tell http from https, so the caller supplies it.
    pub fn of_host(host: &str, scheme: &str) -> Option<Origin> {
        let (host, port) = authority(host, default_port(scheme))?;
        Some(Origin {
            scheme: scheme.to_string(),
            host,
            port,
        })
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }
}

/// Parse `--allow-origin` values (each may list several, comma-separated).
pub fn parse_origins(values: &[String]) -> Result<Vec<Origin>, String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .map(|v| {
            if v.is_empty() {
                Err("an empty --allow-origin: write an origin such as http://localhost:3000".into())
            } else {
                Origin::parse(v)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_with_default_ports() {
        let o = Origin::parse("HTTPS://Example.com/").unwrap();
        assert_eq!(o, Origin::parse("https://example.com:443").unwrap());
        assert_ne!(o, Origin::parse("http://example.com:443").unwrap());
        let v6 = Origin::parse("http://[::1]:8080").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 8080));
        assert!(v6.is_loopback());
        assert!(Origin::parse("http://127.0.0.2:1").unwrap().is_loopback());
        assert!(!Origin::parse("http://evil.example").unwrap().is_loopback());
        for bad in [
            "null",
            "example.com",
            "file:///x",
            "http://a/b",
            "http://a:x",
            "http://",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Origin::of_url("https://stepwise.example.com/base/"),
            Origin::parse("https://stepwise.example.com").ok()
        );
    }
}
