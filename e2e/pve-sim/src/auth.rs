//! Who is calling, and what may they do: pve-http-server's credential extraction,
//! pve-manager's `auth_handler` (ticket or API token, CSRF for cookie-authenticated
//! non-GET requests) and pve-access-control's privilege checks. Verified against
//! `PVE/APIServer/AnyEvent.pm`, `PVE/APIServer/Formatter.pm`, `PVE/HTTPServer.pm`,
//! `PVE/AccessControl.pm` and `PVE/RPCEnvironment.pm`.

use std::collections::BTreeSet;

use http::HeaderMap;

use crate::config::{Privileges, split_userid};
use crate::state::Sim;

/// Why authentication failed: each answer is a 401 whose reason phrase is PVE's
/// message (the body is empty, as pveproxy sends it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("No ticket")]
    NoTicket,
    /// `PVE::Ticket::verify_rsa_ticket` raising for prefix `PVE`.
    #[error("permission denied - invalid PVE ticket")]
    InvalidTicket,
    /// `PVE::Ticket::verify_csrf_prevention_token`.
    #[error("Permission denied - invalid csrf token")]
    InvalidCsrf,
    /// `verify_token` / `check_user_enabled` / `check_token_exist` texts.
    #[error("{0}")]
    Token(String),
    #[error("{0}")]
    User(String),
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Ticket,
    Token,
}

/// An authenticated caller: a user id (`name@realm`) or a token id
/// (`name@realm!token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub authid: String,
    pub via: Via,
}

/// Raw credentials found in a request.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    pub ticket: Option<String>,
    pub api_token: Option<String>,
    pub csrf: Option<String>,
}

/// PVE's order: cookie `PVEAuthCookie`, then `Authorization: PVEAuthCookie=...`,
/// then (only without a ticket) `Authorization: PVEAPIToken=...`.
pub fn extract(headers: &HeaderMap) -> Credentials {
    let joined = |name: &str| {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join("; "))
    };
    let cookie = joined("cookie");
    let authorization = joined("authorization");
    let ticket = cookie
        .as_deref()
        .and_then(|c| auth_value(c, "PVEAuthCookie"))
        .or_else(|| {
            authorization
                .as_deref()
                .and_then(|a| auth_value(a, "PVEAuthCookie"))
        });
    let api_token = if ticket.is_none() {
        authorization
            .as_deref()
            .and_then(|a| auth_value(a, "PVEAPIToken"))
    } else {
        None
    };
    let csrf = headers
        .get("csrfpreventiontoken")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Credentials {
        ticket,
        api_token,
        csrf,
    }
}

/// `extract_auth_value`: `/(?:^|\s)KEY(?:=| )([^;]*)/`, then `uri_unescape`;
/// empty values count as absent.
fn auth_value(header: &str, key: &str) -> Option<String> {
    let mut search = 0;
    while let Some(found) = header[search..].find(key) {
        let start = search + found;
        let boundary_ok = start == 0
            || header[..start]
                .chars()
                .next_back()
                .is_some_and(char::is_whitespace);
        let after = start + key.len();
        let separator_ok = matches!(header.as_bytes().get(after), Some(b'=') | Some(b' '));
        if boundary_ok && separator_ok {
            let rest = &header[after + 1..];
            let value = rest.split(';').next().unwrap_or("");
            let value = uri_unescape(value);
            return (!value.is_empty()).then_some(value);
        }
        search = start + key.len();
    }
    None
}

/// Perl's `uri_unescape`: `%XX` decoded, nothing else.
pub fn uri_unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Paths that need no authentication (pve-manager's `auth_handler`).
pub fn needs_auth(method: &http::Method, rel_path: &str) -> bool {
    let get = method == http::Method::GET;
    let post = method == http::Method::POST;
    !((rel_path == "/access/domains" && get)
        || (rel_path == "/access/ticket" && (get || post))
        || (rel_path == "/access/vncticket" && post))
}

/// pve-manager's `auth_handler` for a request that needs authentication.
pub fn authenticate(
    sim: &Sim,
    method: &http::Method,
    credentials: &Credentials,
) -> Result<Identity, AuthError> {
    let now = sim.now();
    let identity = if let Some(api_token) = &credentials.api_token {
        Identity {
            authid: verify_token(sim, api_token)?,
            via: Via::Token,
        }
    } else {
        let ticket = credentials.ticket.as_deref().ok_or(AuthError::NoTicket)?;
        let verified = sim
            .tickets
            .verify_login_ticket(ticket, sim.login_lifetime(), now)
            .ok_or(AuthError::InvalidTicket)?;
        check_user_enabled(sim, &verified.userid).map_err(AuthError::User)?;
        Identity {
            authid: verified.userid,
            via: Via::Ticket,
        }
    };
    // CSRF only for ticket-authenticated non-GET requests.
    if method != http::Method::GET && identity.via == Via::Ticket {
        let token = credentials.csrf.as_deref().unwrap_or("");
        if !sim
            .tickets
            .verify_csrf_token(&identity.authid, token, sim.login_lifetime(), now)
        {
            return Err(AuthError::InvalidCsrf);
        }
    }
    Ok(identity)
}

/// `PVE::AccessControl::verify_token`: `/^(.*)=(.*)$/` (split on the last `=`).
fn verify_token(sim: &Sim, api_token: &str) -> Result<String, AuthError> {
    let (tokenid, value) = api_token
        .rsplit_once('=')
        .ok_or_else(|| AuthError::Token("no tokenid specified".into()))?;
    let (user, token_name) = tokenid
        .split_once('!')
        .ok_or_else(|| AuthError::Token(format!("'{tokenid}' is not a valid token ID")))?;
    check_user_enabled(sim, user).map_err(AuthError::Token)?;
    let token = sim
        .config
        .tokens
        .iter()
        .find(|t| t.id == tokenid)
        .ok_or_else(|| {
            AuthError::Token(format!("no such token '{token_name}' for user '{user}'"))
        })?;
    if !constant_time_eq(token.secret.as_bytes(), value.as_bytes()) {
        return Err(AuthError::Token("invalid token value!".into()));
    }
    Ok(tokenid.to_string())
}

/// `check_user_enabled`: "no such user ('x')", "user 'x' is disabled".
pub fn check_user_enabled(sim: &Sim, userid: &str) -> Result<(), String> {
    match sim.config.users.iter().find(|u| u.id == userid) {
        None => Err(format!("no such user ('{userid}')")),
        Some(user) if !user.enabled => Err(format!("user '{userid}' is disabled")),
        Some(_) => Ok(()),
    }
}

/// Checks a login password (`authenticate_user`); any failure is the same
/// "authentication failure" for the caller.
pub fn check_password(sim: &Sim, userid: &str, password: &str) -> bool {
    split_userid(userid).is_some()
        && sim.config.users.iter().any(|u| {
            u.id == userid
                && u.enabled
                && constant_time_eq(u.password.as_bytes(), password.as_bytes())
        })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.ct_eq(b).into()
}

/// Every privilege PVE knows that `root@pam` holds (the Administrator role).
const ALL_PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// The privileges `authid` holds on `path`.
pub fn privileges(sim: &Sim, authid: &str, path: &str) -> BTreeSet<String> {
    if authid == "root@pam" {
        return ALL_PRIVILEGES.iter().map(|p| p.to_string()).collect();
    }
    if let Some((user, _)) = authid.split_once('!') {
        let Some(token) = sim.config.tokens.iter().find(|t| t.id == authid) else {
            return BTreeSet::new();
        };
        let of_user = privileges(sim, user, path);
        if !token.privsep {
            return of_user;
        }
        let of_token = acl_lookup(&token.privileges, path);
        return of_user.intersection(&of_token).cloned().collect();
    }
    match sim.config.users.iter().find(|u| u.id == authid) {
        Some(user) => acl_lookup(&user.privileges, path),
        None => BTreeSet::new(),
    }
}

/// The most specific ACL entry at or above `path` wins (PVE's ACL tree with
/// propagation: a deeper entry for the same user replaces the inherited roles).
fn acl_lookup(acl: &Privileges, path: &str) -> BTreeSet<String> {
    let mut best: Option<(&str, &Vec<String>)> = None;
    for (acl_path, privs) in acl {
        let applies = acl_path == "/"
            || acl_path == path
            || path
                .strip_prefix(acl_path.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        if applies && best.is_none_or(|(p, _)| acl_path.len() > p.len()) {
            best = Some((acl_path, privs));
        }
    }
    best.map(|(_, privs)| privs.iter().cloned().collect())
        .unwrap_or_default()
}

/// `$rpcenv->check`: `None` when allowed, else the 403 message
/// "Permission check failed (/vms/100, VM.Console)".
pub fn check(sim: &Sim, authid: &str, path: &str, privilege: &str) -> Option<String> {
    (!privileges(sim, authid, path).contains(privilege))
        .then(|| format!("Permission check failed ({path}, {privilege})\n"))
}

/// `compute_api_permission`: the `cap` of a login answer.
pub fn capabilities(sim: &Sim, userid: &str) -> serde_json::Value {
    let groups = [
        ("vms", &["VM.", "Permissions.Modify"][..]),
        ("access", &["User.", "Group.", "Permissions.Modify"]),
        ("storage", &["Datastore.", "Permissions.Modify"]),
        ("nodes", &["Sys.", "Permissions.Modify"]),
        ("sdn", &["SDN.", "Permissions.Modify"]),
        ("dc", &["Sys.Audit", "Sys.Modify", "SDN."]),
        ("mapping", &["Mapping.", "Permissions.Modify"]),
    ];
    let mut paths: BTreeSet<String> = [
        "/",
        "/nodes",
        "/access/groups",
        "/vms",
        "/storage",
        "/sdn",
        "/mapping",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    if let Some(user) = sim.config.users.iter().find(|u| u.id == userid) {
        paths.extend(user.privileges.keys().cloned());
    }
    let mut cap = serde_json::Map::new();
    for (group, _) in groups {
        cap.insert(group.into(), serde_json::json!({}));
    }
    for path in paths {
        let toplevel = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("dc")
            .to_string();
        let Some((_, prefixes)) = groups.iter().find(|(g, _)| *g == toplevel) else {
            continue;
        };
        for privilege in privileges(sim, userid, &path) {
            if prefixes.iter().any(|p| privilege.starts_with(p)) {
                cap[&toplevel][&privilege] = serde_json::json!(1);
            }
        }
    }
    serde_json::Value::Object(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn extracts_credentials_in_pve_s_order() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("PVEAPIToken=a@pve!t=s=x"),
        );
        assert_eq!(extract(&headers).api_token.as_deref(), Some("a@pve!t=s=x"));
        headers.insert(
            "cookie",
            HeaderValue::from_static("other=1; PVEAuthCookie=PVE%3Aa%40pve%3A1::x"),
        );
        let found = extract(&headers);
        assert_eq!(found.ticket.as_deref(), Some("PVE:a@pve:1::x"));
        assert_eq!(found.api_token, None);
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("PVEAuthCookie=T"));
        assert_eq!(extract(&headers).ticket.as_deref(), Some("T"));
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_static("XPVEAuthCookie=T"));
        assert_eq!(extract(&headers).ticket, None);
    }

    #[test]
    fn most_specific_acl_entry_wins() {
        let mut acl = Privileges::new();
        acl.insert("/".into(), vec!["VM.Audit".into()]);
        acl.insert("/vms/100".into(), vec!["VM.Console".into()]);
        assert!(acl_lookup(&acl, "/vms/100").contains("VM.Console"));
        assert!(!acl_lookup(&acl, "/vms/100").contains("VM.Audit"));
        assert!(acl_lookup(&acl, "/vms/1000").contains("VM.Audit"));
        assert!(!acl_lookup(&acl, "/vms/1000").contains("VM.Console"));
    }

    #[test]
    fn unescapes_like_perl() {
        assert_eq!(uri_unescape("a%3Ab%zz%4"), "a:b%zz%4");
    }
}
