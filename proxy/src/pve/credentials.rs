//! The Proxmox VE identity a session uses, read from the session directory.
//!
//! The operator renews the login ticket and the kubelet swaps the Secret
//! volume's files under the pod, so [`read`] runs at every viewer connection,
//! never once at start. Nothing here ever prints a credential: `Debug` is
//! redacted and errors name files, never contents.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use http::HeaderValue;
use http::header::{AUTHORIZATION, COOKIE};
use porthole_api::contract::secret_keys;

use super::api::percent_encode;

/// Why the session directory holds no usable identity.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the session directory {dir} holds no Proxmox VE credential ({} and {}, or {})",
        secret_keys::PVE_TICKET,
        secret_keys::PVE_CSRF_TOKEN,
        secret_keys::PVE_API_TOKEN
    )]
    Missing { dir: PathBuf },
    #[error(
        "the session directory {dir} holds both a login ticket and an API token; the operator sets one"
    )]
    Both { dir: PathBuf },
    #[error(
        "{} is in the session directory {dir}, but {} is not",
        secret_keys::PVE_TICKET,
        secret_keys::PVE_CSRF_TOKEN
    )]
    NoCsrfToken { dir: PathBuf },
    #[error("{key} in the session directory {dir} is not {expected}")]
    Malformed {
        key: &'static str,
        dir: PathBuf,
        expected: &'static str,
    },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// How the proxy proves itself to Proxmox VE.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Password mode: a login ticket the operator renews, and its CSRF token.
    Ticket { ticket: String, csrf_token: String },
    /// API-token mode: `USER@REALM!TOKENID=SECRET`.
    ApiToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::Ticket { .. } => "Credential::Ticket(<redacted>)",
            Credential::ApiToken(_) => "Credential::ApiToken(<redacted>)",
        })
    }
}

impl Credential {
    /// The headers that authenticate a request. A ticket needs its CSRF token
    /// on anything but GET; an API token never does. Every value is marked
    /// sensitive.
    pub fn headers(&self, with_csrf: bool) -> Vec<(http::HeaderName, HeaderValue)> {
        let sensitive = |text: String| {
            let mut value = HeaderValue::try_from(text).expect("checked when read: visible ASCII");
            value.set_sensitive(true);
            value
        };
        match self {
            Credential::Ticket { ticket, csrf_token } => {
                // Proxmox's own clients escape the ticket; the server unescapes it.
                let mut headers = vec![(
                    COOKIE,
                    sensitive(format!("PVEAuthCookie={}", percent_encode(ticket))),
                )];
                if with_csrf {
                    // `CSRFPreventionToken`; header names are case-insensitive.
                    headers.push((
                        http::HeaderName::from_static("csrfpreventiontoken"),
                        sensitive(csrf_token.clone()),
                    ));
                }
                headers
            }
            Credential::ApiToken(token) => {
                vec![(AUTHORIZATION, sensitive(format!("PVEAPIToken={token}")))]
            }
        }
    }

    /// The identity's kind, for logs.
    pub fn mode(&self) -> &'static str {
        match self {
            Credential::Ticket { .. } => "ticket",
            Credential::ApiToken(_) => "api-token",
        }
    }
}

/// Reads the identity from `dir`: a ticket with its CSRF token, or an API token.
pub fn read(dir: &Path) -> Result<Credential, Error> {
    let ticket = read_key(dir, secret_keys::PVE_TICKET)?;
    let csrf_token = read_key(dir, secret_keys::PVE_CSRF_TOKEN)?;
    let api_token = read_key(dir, secret_keys::PVE_API_TOKEN)?;
    let dir = dir.to_path_buf();
    match (ticket, api_token) {
        (Some(_), Some(_)) => Err(Error::Both { dir }),
        (None, None) => Err(Error::Missing { dir }),
        (Some(ticket), None) => {
            let csrf_token = csrf_token.ok_or_else(|| Error::NoCsrfToken { dir: dir.clone() })?;
            if !ticket.starts_with("PVE:") {
                return Err(Error::Malformed {
                    key: secret_keys::PVE_TICKET,
                    dir,
                    expected: "a Proxmox VE login ticket (PVE:USER@REALM:...)",
                });
            }
            Ok(Credential::Ticket { ticket, csrf_token })
        }
        (None, Some(token)) => {
            if !is_api_token(&token) {
                return Err(Error::Malformed {
                    key: secret_keys::PVE_API_TOKEN,
                    dir,
                    expected: "USER@REALM!TOKENID=SECRET",
                });
            }
            Ok(Credential::ApiToken(token))
        }
    }
}

/// `USER@REALM!TOKENID=SECRET`, split on the last `=` as Proxmox does.
fn is_api_token(token: &str) -> bool {
    token.rsplit_once('=').is_some_and(|(id, secret)| {
        !secret.is_empty()
            && id
                .split_once('@')
                .and_then(|(user, rest)| Some((user, rest.split_once('!')?)))
                .is_some_and(|(user, (realm, token_id))| {
                    !user.is_empty() && !realm.is_empty() && !token_id.is_empty()
                })
    })
}

/// A key's file, trimmed; `None` when absent or blank. Only visible ASCII is
/// accepted, as it must go into a header.
fn read_key(dir: &Path, key: &'static str) -> Result<Option<String>, Error> {
    let path = dir.join(key);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Read { path, source }),
    };
    let text = bytes.trim_ascii();
    if text.is_empty() {
        return Ok(None);
    }
    if !text.iter().all(u8::is_ascii_graphic) {
        return Err(Error::Malformed {
            key,
            dir: dir.to_path_buf(),
            expected: "one line of visible ASCII",
        });
    }
    Ok(Some(String::from_utf8_lossy(text).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("porthole-pve-cred-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (key, value) in files {
            std::fs::write(dir.join(key), value).unwrap();
        }
        dir
    }

    const TICKET: &str = "PVE:porthole@pve:6745A1B2::c2lnbmF0dXJl+/=";

    #[test]
    fn a_ticket_goes_in_an_escaped_cookie_with_its_csrf_token() {
        let d = dir(
            "ticket",
            &[
                ("pve-ticket", &format!("{TICKET}\n")),
                ("pve-csrf-token", "6745A1B2:abc+/=\n"),
            ],
        );
        let credential = read(&d).unwrap();
        let headers = credential.headers(true);
        assert_eq!(headers[0].0, COOKIE);
        assert_eq!(
            headers[0].1,
            "PVEAuthCookie=PVE%3Aporthole%40pve%3A6745A1B2%3A%3Ac2lnbmF0dXJl%2B%2F%3D"
        );
        assert_eq!(headers[1].0.as_str(), "csrfpreventiontoken");
        assert_eq!(headers[1].1, "6745A1B2:abc+/=");
        assert!(headers.iter().all(|(_, v)| v.is_sensitive()));
        assert_eq!(credential.headers(false).len(), 1, "no CSRF token on GET");
        assert!(!format!("{credential:?}").contains("porthole@pve"));
    }

    #[test]
    fn an_api_token_goes_in_the_authorization_header() {
        let token = "porthole@pve!console=0b2c7e54-3a35-4d5c-9f4f-1f0b6d1e2a3b";
        let d = dir("token", &[("pve-api-token", token)]);
        let credential = read(&d).unwrap();
        let headers = credential.headers(true);
        assert_eq!(headers.len(), 1, "no CSRF token with an API token");
        assert_eq!(headers[0].0, AUTHORIZATION);
        assert_eq!(headers[0].1, format!("PVEAPIToken={token}").as_str());
        assert!(!format!("{credential:?}").contains("0b2c"));
    }

    #[test]
    fn unusable_directories_say_why_without_the_secret() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("none", &[]),
            ("blank", &[("pve-ticket", "\n"), ("pve-api-token", " ")]),
            (
                "both",
                &[
                    ("pve-ticket", TICKET),
                    ("pve-csrf-token", "x"),
                    ("pve-api-token", "a@pve!t=s"),
                ],
            ),
            ("nocsrf", &[("pve-ticket", TICKET)]),
            (
                "notaticket",
                &[("pve-ticket", "hunter2-secret"), ("pve-csrf-token", "x")],
            ),
            ("badtoken", &[("pve-api-token", "hunter2-secret")]),
            ("noid", &[("pve-api-token", "@pve!t=hunter2-secret")]),
            ("spaces", &[("pve-api-token", "a@pve!t=hunter2 secret")]),
        ];
        for (name, files) in cases {
            let error = read(&dir(name, files)).unwrap_err().to_string();
            assert!(!error.contains("hunter2"), "{name}: {error}");
            assert!(!error.contains("c2lnbmF0"), "{name}: {error}");
        }
        assert!(matches!(
            read(&dir("none2", &[])),
            Err(Error::Missing { .. })
        ));
        assert!(matches!(
            read(&dir("both2", cases[2].1)),
            Err(Error::Both { .. })
        ));
    }

    #[test]
    fn api_token_shape() {
        assert!(is_api_token("porthole@pve!console=secret"));
        assert!(is_api_token("root@pam!ci=a=b"));
        for bad in [
            "porthole@pve!console",
            "porthole@pve=secret",
            "@pve!t=s",
            "u@!t=s",
            "u@pve!=s",
            "u@pve!t=",
        ] {
            assert!(!is_api_token(bad), "{bad}");
        }
    }
}
