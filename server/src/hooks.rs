//! Completion hooks' rules, shared by the API (which checks a task's
//! `hook_url` when it is set) and the engine (which checks it again before
//! each try, since the settings may have changed, signs and sends): which
//! hosts a hook may call, how a POST is signed, how long to wait between
//! tries.
//!
//! Only loopback hosts are allowed unless the admin lists others
//! (`--hook-allow-hosts`) or opens hooks to any host
//! (`--hook-allow-any-host`): a task's author is an operator, and a hook
//! is a request the server makes on their behalf — to an internal address
//! an operator could not reach otherwise.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;
use std::time::Duration;
use url::{Host, Url};

/// Tries a delivery gets (the first and four retries) before it is failed.
pub const MAX_ATTEMPTS: i64 = 5;

/// The waits after the 1st, 2nd, 3rd and 4th failed try, in multiples of
/// the retry base: with the default base of 10 s, 10 s, 1 min, 5 min, 30 min.
const BACKOFF: [u32; 4] = [1, 6, 30, 180];

/// The header carrying the signature: `sha256=<hex of HMAC-SHA256(key, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Stepwise-Signature";

/// How this server's hooks behave (the admin's settings).
#[derive(Debug, Clone)]
pub struct HookSettings {
    /// Hosts besides loopback a hook may call (exact names or IP
    /// addresses, case-insensitive). `--hook-allow-hosts`.
    pub allow_hosts: Vec<String>,
    /// Any host may be called. `--hook-allow-any-host`.
    pub allow_any_host: bool,
    /// The first wait before a retry; later ones are multiples of it (see
    /// [`HookSettings::retry_delay`]). `--hook-retry-base-ms`, default 10 s.
    pub retry_base: Duration,
    /// How long a try may take, connection included (default 10 s).
    pub timeout: Duration,
}

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings {
            allow_hosts: Vec::new(),
            allow_any_host: false,
            retry_base: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
        }
    }
}

impl HookSettings {
    /// Whether `url` may be a hook: an absolute http URL without
    /// credentials whose host is loopback, allow-listed, or any host when
    /// the admin opened hooks. https is refused with a reason: this build
    /// has no TLS, and a hook that can never be delivered is better
    /// refused when it is set. The error says what to do.
    pub fn check_url(&self, url: &str) -> Result<Url, String> {
        if url.len() > 2000 {
            return Err("must be at most 2000 characters".to_string());
        }
        let parsed = Url::parse(url).map_err(|e| {
            format!("`{url}` is not an absolute URL ({e}); use e.g. http://127.0.0.1:8080/done")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("`{url}` must use http, not `{}`", parsed.scheme()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(
                "must not carry a user name or password; the server signs each POST instead"
                    .to_string(),
            );
        }
        let Some(host) = parsed.host() else {
            return Err(format!("`{url}` names no host"));
        };
        if !(self.allow_any_host || is_loopback(&host) || self.listed(&host)) {
            return Err(format!(
                "host `{host}` is not allowed: hooks may call loopback hosts (127.0.0.1, ::1, \
                 localhost) and the hosts an admin allows with --hook-allow-hosts \
                 (STEPWISE_HOOK_ALLOW_HOSTS); ask an admin to add it"
            ));
        }
        if parsed.scheme() == "https" {
            // reqwest is built without TLS (no TLS stack in the dependency tree).
            return Err(format!(
                "`{url}` uses https, which this server cannot send (it is built without TLS): \
                 use http, or let a TLS proxy on loopback forward to the receiver"
            ));
        }
        Ok(parsed)
    }

    fn listed(&self, host: &Host<&str>) -> bool {
        let name = match host {
            Host::Domain(name) => name.to_ascii_lowercase(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => ip.to_string(),
        };
        self.allow_hosts.iter().any(|allowed| {
            let allowed = allowed.trim().trim_start_matches('[').trim_end_matches(']');
            allowed.eq_ignore_ascii_case(&name)
                || allowed
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.to_string() == name)
        })
    }

    /// The wait after the `failed`-th failed try of a round (1-based);
    /// `None` once [`MAX_ATTEMPTS`] tries failed: give up.
    pub fn retry_delay(&self, failed: i64) -> Option<Duration> {
        if failed >= MAX_ATTEMPTS {
            return None;
        }
        let step = usize::try_from(failed.max(1) - 1).unwrap_or(0);
        let factor = BACKOFF[step.min(BACKOFF.len() - 1)];
        Some(self.retry_base.saturating_mul(factor))
    }
}

/// 127.0.0.0/8, ::1 (and ::ffff:127.x), `localhost` and its subdomains
/// (which resolve to loopback by RFC 6761).
fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The value of [`SIGNATURE_HEADER`] for `body`: `sha256=` and the hex of
/// HMAC-SHA256 over the exact body bytes with the server's hook key (see
/// [`crate::secrets::SecretBox::hook_key`]).
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(allow: &[&str], any: bool) -> HookSettings {
        HookSettings {
            allow_hosts: allow.iter().map(|s| s.to_string()).collect(),
            allow_any_host: any,
            ..HookSettings::default()
        }
    }

    #[test]
    fn loopback_is_allowed_and_other_hosts_only_when_listed() {
        let strict = settings(&[], false);
        for ok in [
            "http://127.0.0.1:9/x",
            "http://127.8.9.1/",
            "http://[::1]:80/",
            "http://localhost/done",
            "http://api.localhost/",
        ] {
            assert!(strict.check_url(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://example.com/",
            "http://10.0.0.1/",
            "ftp://127.0.0.1/",
            "http://user:pw@127.0.0.1/",
            "/relative",
            "http://localhost.example.com/",
            "https://localhost/done",
        ] {
            assert!(strict.check_url(refused).is_err(), "{refused}");
        }
        let listed = settings(&["Shop.Example", "10.0.0.1"], false);
        assert!(listed.check_url("http://shop.example/hook").is_ok());
        assert!(listed.check_url("http://10.0.0.1:81/").is_ok());
        assert!(listed.check_url("http://other.example/").is_err());
        assert!(
            settings(&[], true)
                .check_url("http://other.example/")
                .is_ok()
        );
    }

    #[test]
    fn backoff_grows_then_gives_up() {
        let s = settings(&[], false);
        let secs = |n| s.retry_delay(n).map(|d| d.as_secs());
        assert_eq!(
            (1..=5).map(secs).collect::<Vec<_>>(),
            [Some(10), Some(60), Some(300), Some(1800), None]
        );
    }

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
