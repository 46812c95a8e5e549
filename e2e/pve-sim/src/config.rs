//! The simulator's YAML configuration: where it listens, which Proxmox behaviour
//! it plays, its users, API tokens and VMs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors reading or checking a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing the configuration: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Which Proxmox VE release the simulator plays (see the README).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum Behaviour {
    /// Late 2025: the VNC password is the ticket (only its first 8 bytes count); a
    /// generated password only with `generate-password=1`; the port is not bound.
    A,
    /// April 2026: a generated password always, returned `ticket` is
    /// `"<password>:PVEVNC:..."`, and the ticket is bound to the port.
    #[default]
    B,
}

/// The guest type behind a VMID, which decides the API path (`qemu` or `lxc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Qemu,
    Lxc,
}

impl Kind {
    /// The path segment of the API (`/nodes/{node}/<segment>/{vmid}`).
    pub fn segment(self) -> &'static str {
        match self {
            Kind::Qemu => "qemu",
            Kind::Lxc => "lxc",
        }
    }

    /// The cluster file system directory holding this kind's configurations.
    pub fn config_dir(self) -> &'static str {
        match self {
            Kind::Qemu => "qemu-server",
            Kind::Lxc => "lxc",
        }
    }
}

/// Privileges per ACL path, e.g. `/vms/100: [VM.Console]`. An entry applies to its
/// path and everything below it; the most specific path wins (as PVE's ACL tree
/// with `propagate=1`).
pub type Privileges = BTreeMap<String, Vec<String>>;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// `name@realm`.
    pub id: String,
    pub password: String,
    #[serde(default)]
    pub privileges: Privileges,
    #[serde(default = "yes")]
    pub enabled: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// `name@realm!tokenid`; the user must be configured too.
    pub id: String,
    pub secret: String,
    #[serde(default)]
    pub privileges: Privileges,
    /// Privilege separation: the token gets the intersection of its own and its
    /// user's privileges; without it, exactly its user's.
    #[serde(default = "yes")]
    pub privsep: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub vmid: u32,
    #[serde(default)]
    pub kind: Kind,
    #[serde(default = "yes")]
    pub running: bool,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `IP:PORT`; port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub behaviour: Behaviour,
    #[serde(default = "default_node")]
    pub node: String,
    /// How long every 401 answer is held back (PVE: 3 s).
    #[serde(default = "default_auth_failure_delay_ms")]
    pub auth_failure_delay_ms: u64,
    /// Login tickets (and CSRF tokens) are accepted while -300 < age < this (PVE: 7200).
    #[serde(default = "default_login_ticket_lifetime_secs")]
    pub login_ticket_lifetime_secs: u64,
    /// How long a QEMU vncproxy worker waits for its one connection (PVE: 10 s).
    #[serde(default = "default_qemu_listener_timeout_secs")]
    pub qemu_listener_timeout_secs: u64,
    /// How long an LXC console (vncterm) waits for its first client (PVE: 20 s).
    #[serde(default = "default_lxc_listener_timeout_secs")]
    pub lxc_listener_timeout_secs: u64,
    /// The QEMU binary that runs the VMs.
    #[serde(default = "default_qemu_binary")]
    pub qemu_binary: String,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    #[serde(default)]
    pub vms: Vec<VmConfig>,
}

fn yes() -> bool {
    true
}
fn default_listen() -> String {
    "127.0.0.1:0".into()
}
fn default_node() -> String {
    "pve".into()
}
fn default_auth_failure_delay_ms() -> u64 {
    3000
}
fn default_login_ticket_lifetime_secs() -> u64 {
    7200
}
fn default_qemu_listener_timeout_secs() -> u64 {
    10
}
fn default_lxc_listener_timeout_secs() -> u64 {
    20
}
fn default_qemu_binary() -> String {
    "qemu-system-x86_64".into()
}

impl Config {
    /// Parses and checks a YAML document.
    pub fn from_yaml(text: &str) -> Result<Config> {
        let config: Config = serde_yaml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&text)
    }

    /// Checks what serde cannot: identifiers' shapes and references.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(format!("listen {:?} is not IP:PORT", self.listen));
        }
        if !valid_node_name(&self.node) {
            return invalid(format!("node {:?} is not a valid node name", self.node));
        }
        let mut users = BTreeSet::new();
        for user in &self.users {
            if split_userid(&user.id).is_none() {
                return invalid(format!("user id {:?} is not name@realm", user.id));
            }
            if !users.insert(user.id.as_str()) {
                return invalid(format!("user {} is configured twice", user.id));
            }
            check_privileges(&user.id, &user.privileges)?;
        }
        let mut tokens = BTreeSet::new();
        for token in &self.tokens {
            let Some((user, name)) = token.id.split_once('!') else {
                return invalid(format!("token id {:?} is not user@realm!tokenid", token.id));
            };
            if name.is_empty() || !name.chars().all(valid_token_char) {
                return invalid(format!("token id {:?} has an invalid token name", token.id));
            }
            if !users.contains(user) {
                return invalid(format!("token {} belongs to unknown user {user}", token.id));
            }
            if !tokens.insert(token.id.as_str()) {
                return invalid(format!("token {} is configured twice", token.id));
            }
            check_privileges(&token.id, &token.privileges)?;
        }
        let mut vmids = BTreeSet::new();
        for vm in &self.vms {
            if !(100..=999_999_999).contains(&vm.vmid) {
                return invalid(format!("vmid {} is outside 100-999999999", vm.vmid));
            }
            if !vmids.insert(vm.vmid) {
                return invalid(format!("vmid {} is configured twice", vm.vmid));
            }
        }
        Ok(())
    }
}

fn check_privileges(owner: &str, privileges: &Privileges) -> Result<()> {
    for path in privileges.keys() {
        if !path.starts_with('/') {
            return Err(ConfigError::Invalid(format!(
                "{owner}: ACL path {path:?} must start with /"
            )));
        }
    }
    Ok(())
}

/// `name@realm` split in two, if both parts look like PVE's.
pub fn split_userid(id: &str) -> Option<(&str, &str)> {
    let (name, realm) = id.rsplit_once('@')?;
    let ok_name = !name.is_empty() && !name.contains(['!', ':', ' ', '/']);
    let ok_realm = !realm.is_empty()
        && realm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    (ok_name && ok_realm).then_some((name, realm))
}

fn valid_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'
}

fn valid_node_name(node: &str) -> bool {
    !node.is_empty() && node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pve_s() {
        let config = Config::from_yaml("{}").unwrap();
        assert_eq!(config.behaviour, Behaviour::B);
        assert_eq!(config.node, "pve");
        assert_eq!(config.auth_failure_delay_ms, 3000);
        assert_eq!(config.login_ticket_lifetime_secs, 7200);
        assert_eq!(config.qemu_listener_timeout_secs, 10);
        assert_eq!(config.lxc_listener_timeout_secs, 20);
    }

    #[test]
    fn parses_a_full_document() {
        let config = Config::from_yaml(
            r#"
listen: 10.200.0.1:0
behaviour: A
node: pve1
users:
  - id: alice@pve
    password: secret
    privileges: {/vms/100: [VM.Console]}
tokens:
  - id: alice@pve!porthole
    secret: 5e3c
    privsep: false
vms:
  - {vmid: 100}
  - {vmid: 200, kind: lxc, running: false}
"#,
        )
        .unwrap();
        assert_eq!(config.behaviour, Behaviour::A);
        assert_eq!(config.vms[1].kind, Kind::Lxc);
        assert!(!config.vms[1].running);
        assert!(!config.tokens[0].privsep);
    }

    #[test]
    fn rejects_tokens_of_unknown_users_and_bad_ids() {
        assert!(Config::from_yaml("tokens: [{id: bob@pve!t, secret: x}]").is_err());
        assert!(Config::from_yaml("users: [{id: bob, password: x}]").is_err());
        assert!(Config::from_yaml("vms: [{vmid: 99}]").is_err());
        assert!(Config::from_yaml("unknown: 1").is_err());
    }
}
