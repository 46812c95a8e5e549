//! Where a session's proxy connects, and with what: resolved from the
//! Hypervisor, never from the session. Pure.

use std::collections::BTreeMap;
use std::fmt;

use porthole_api::contract::{env, secret_keys};
use porthole_api::v1alpha1::VmKind;
use porthole_pve::api::LoginTicket;
use porthole_pve::tls::TlsSettings;

#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A plain VNC server.
    Vnc(VncTarget),
    /// A VM on Proxmox VE; the proxy mints a console per viewer.
    Proxmox(ProxmoxTarget),
}

#[derive(Clone, PartialEq)]
pub struct VncTarget {
    pub host: String,
    pub port: u16,
    /// The VNC password, when the hypervisor requires one.
    pub password: Option<String>,
}

impl fmt::Debug for VncTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VncTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProxmoxTarget {
    /// The API's base URL, and its host and port for the NetworkPolicy.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub node: String,
    pub kind: VmKind,
    pub vmid: u32,
    pub tls: TlsSettings,
    pub auth: ProxmoxAuth,
}

/// How the proxy authenticates to Proxmox.
#[derive(Clone, PartialEq)]
pub enum ProxmoxAuth {
    /// Password mode before login: the operator logs in with these and hands
    /// the proxy only the resulting ticket. Never written anywhere.
    Login { username: String, password: String },
    /// Password mode after login: the session's own ticket.
    Ticket(LoginTicket),
    /// API-token mode: `USER@REALM!TOKENID=SECRET` reaches the proxy as it is.
    ApiToken(String),
}

impl fmt::Debug for ProxmoxAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxmoxAuth::Login { username, .. } => write!(f, "Login({username})"),
            ProxmoxAuth::Ticket(ticket) => write!(f, "Ticket({})", ticket.username),
            ProxmoxAuth::ApiToken(_) => f.write_str("ApiToken(<redacted>)"),
        }
    }
}

impl Target {
    /// The host and TCP port the proxy dials.
    pub fn endpoint(&self) -> (&str, u16) {
        match self {
            Target::Vnc(vnc) => (&vnc.host, vnc.port),
            Target::Proxmox(pve) => (&pve.host, pve.port),
        }
    }

    /// The environment the proxy needs to find its target.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Target::Vnc(vnc) => vec![(env::UPSTREAM, host_port(&vnc.host, vnc.port))],
            Target::Proxmox(pve) => {
                let mut vars = vec![
                    (env::PVE_URL, pve.url.clone()),
                    (env::PVE_NODE, pve.node.clone()),
                    (env::PVE_VM_KIND, pve.kind.as_str().to_string()),
                    (env::PVE_VMID, pve.vmid.to_string()),
                ];
                if let Some(pin) = &pve.tls.fingerprint_sha256 {
                    vars.push((env::PVE_FINGERPRINT, pin.clone()));
                }
                if pve.tls.insecure_skip_verify {
                    vars.push((env::PVE_INSECURE_SKIP_VERIFY, "true".to_string()));
                }
                vars
            }
        }
    }

    /// The session Secret's keys for the target's credential.
    pub fn secret_data(&self) -> BTreeMap<&'static str, String> {
        let mut data = BTreeMap::new();
        match self {
            Target::Vnc(VncTarget {
                password: Some(password),
                ..
            }) => {
                data.insert(secret_keys::VNC_PASSWORD, password.clone());
            }
            Target::Vnc(_) => {}
            Target::Proxmox(pve) => {
                match &pve.auth {
                    ProxmoxAuth::Ticket(ticket) => {
                        data.insert(secret_keys::PVE_TICKET, ticket.ticket.clone());
                        data.insert(secret_keys::PVE_CSRF_TOKEN, ticket.csrf_token.clone());
                    }
                    ProxmoxAuth::ApiToken(token) => {
                        data.insert(secret_keys::PVE_API_TOKEN, token.clone());
                    }
                    // The password stays with the operator; the reconciler logs
                    // in before building anything.
                    ProxmoxAuth::Login { .. } => {}
                }
                if let Some(ca) = &pve.tls.ca_bundle {
                    data.insert(secret_keys::PVE_CA_BUNDLE, ca.clone());
                }
            }
        }
        data
    }

    /// Whether the credential changes during the session (a renewed ticket),
    /// so the Secret cannot be immutable.
    pub fn renews(&self) -> bool {
        matches!(
            self,
            Target::Proxmox(ProxmoxTarget {
                auth: ProxmoxAuth::Ticket(_) | ProxmoxAuth::Login { .. },
                ..
            })
        )
    }

    /// How the console page names the VM.
    pub fn describe(&self, hypervisor: &str) -> String {
        match self {
            Target::Vnc(vnc) => format!("{hypervisor} port {}", vnc.port),
            Target::Proxmox(pve) => format!(
                "{hypervisor} {}/{} {}",
                pve.node,
                pve.kind.as_str(),
                pve.vmid
            ),
        }
    }
}

/// `host:port`, bracketing IPv6 literals.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn proxmox(auth: ProxmoxAuth) -> Target {
        Target::Proxmox(ProxmoxTarget {
            url: "https://10.0.0.9:8006".into(),
            host: "10.0.0.9".into(),
            port: 8006,
            node: "pve1".into(),
            kind: VmKind::Lxc,
            vmid: 101,
            tls: TlsSettings {
                ca_bundle: Some("PEM".into()),
                fingerprint_sha256: None,
                insecure_skip_verify: true,
            },
            auth,
        })
    }

    fn ticket() -> ProxmoxAuth {
        ProxmoxAuth::Ticket(LoginTicket {
            username: "porthole@pve".into(),
            ticket: "PVE:porthole@pve:00000001::sig".into(),
            csrf_token: "00000001:csrf".into(),
        })
    }

    #[test]
    fn a_proxmox_target_tells_the_proxy_where_and_how() {
        let target = proxmox(ticket());
        let env: BTreeMap<_, _> = target.env().into_iter().collect();
        assert_eq!(env[env::PVE_URL], "https://10.0.0.9:8006");
        assert_eq!(env[env::PVE_NODE], "pve1");
        assert_eq!(env[env::PVE_VM_KIND], "lxc");
        assert_eq!(env[env::PVE_VMID], "101");
        assert_eq!(env[env::PVE_INSECURE_SKIP_VERIFY], "true");
        assert!(!env.contains_key(env::UPSTREAM));
        assert_eq!(target.endpoint(), ("10.0.0.9", 8006));
    }

    #[test]
    fn only_the_ticket_reaches_the_secret_in_password_mode() {
        let before_login = proxmox(ProxmoxAuth::Login {
            username: "porthole@pve".into(),
            password: "hunter2".into(),
        });
        assert!(
            before_login
                .secret_data()
                .values()
                .all(|v| !v.contains("hunter2"))
        );
        let data = proxmox(ticket()).secret_data();
        assert_eq!(
            data[secret_keys::PVE_TICKET],
            "PVE:porthole@pve:00000001::sig"
        );
        assert_eq!(data[secret_keys::PVE_CSRF_TOKEN], "00000001:csrf");
        assert_eq!(data[secret_keys::PVE_CA_BUNDLE], "PEM");
        assert!(!data.contains_key(secret_keys::PVE_API_TOKEN));
        assert!(proxmox(ticket()).renews());
    }

    #[test]
    fn api_token_mode_hands_the_token_over_and_never_renews() {
        let target = proxmox(ProxmoxAuth::ApiToken("u@pve!t=secret".into()));
        assert_eq!(
            target.secret_data()[secret_keys::PVE_API_TOKEN],
            "u@pve!t=secret"
        );
        assert!(!target.renews());
    }

    #[test]
    fn debug_output_hides_credentials() {
        let login = format!(
            "{:?}",
            proxmox(ProxmoxAuth::Login {
                username: "porthole@pve".into(),
                password: "hunter2".into(),
            })
        );
        let token = format!(
            "{:?}",
            proxmox(ProxmoxAuth::ApiToken("u@pve!t=s3cr3t".into()))
        );
        let vnc = format!(
            "{:?}",
            Target::Vnc(VncTarget {
                host: "h".into(),
                port: 1,
                password: Some("pw-value".into())
            })
        );
        assert!(!login.contains("hunter2"));
        assert!(!token.contains("s3cr3t"));
        assert!(!vnc.contains("pw-value"));
        assert!(!format!("{:?}", proxmox(ticket())).contains("sig"));
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(host_port("fd00::5", 5900), "[fd00::5]:5900");
        assert_eq!(host_port("hv.example", 5900), "hv.example:5900");
    }
}
