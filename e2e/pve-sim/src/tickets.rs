//! Tickets and CSRF tokens in the formats of pve-common's `PVE::Ticket` and
//! pve-access-control's `PVE::AccessControl` (verified against their sources):
//!
//! - `plain = PREFIX ":" [data ":"] HEXTIME` (HEXTIME = `%08X` of the Unix time),
//!   `ticket = plain "::" base64(signature over plain [":" secret_data])`.
//! - login ticket: prefix `PVE`, data = the user id, accepted while -300 < age < lifetime;
//! - VNC ticket: prefix `PVEVNC`, no data, secret data `authid:/vms/ID` (behaviour B
//!   adds `:port`), accepted while -20 < age < 40;
//! - CSRF token: `HEXTIME:base64(hmac_sha256("HEXTIME:user"))` without padding
//!   (Perl's `Digest::SHA::hmac_sha256_base64`).
//!
//! Deviation: PVE signs with RSA (2048-bit key, 344-character signatures); the
//! simulator signs with Ed25519 (88 characters), because `ring` cannot generate RSA
//! keys. Clients treat tickets as opaque, so only their length differs.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

/// Errors creating keys.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error("generating a signing key failed")]
    KeyGeneration,
}

/// The simulator's clock: the system clock plus an offset tests can move
/// (`POST /_sim/clock`), so expiry is tested without waiting.
#[derive(Debug, Default)]
pub struct Clock {
    offset_secs: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> i64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        system + self.offset_secs.load(Ordering::SeqCst)
    }

    /// Moves the clock by `secs` (negative moves it back); returns the new offset.
    pub fn advance(&self, secs: i64) -> i64 {
        self.offset_secs.fetch_add(secs, Ordering::SeqCst) + secs
    }
}

/// An Ed25519 key pair with its public half kept for verification.
struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    fn generate(rng: &SystemRandom) -> Result<Self, TicketError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| TicketError::KeyGeneration)?;
        let pair =
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| TicketError::KeyGeneration)?;
        Ok(SigningKey { pair })
    }

    fn sign(&self, message: &str) -> String {
        STANDARD.encode(self.pair.sign(message.as_bytes()).as_ref())
    }

    fn verify(&self, message: &str, signature_b64: &str) -> bool {
        let Ok(signature) = STANDARD.decode(signature_b64) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, self.pair.public_key().as_ref())
            .verify(message.as_bytes(), &signature)
            .is_ok()
    }
}

struct Keys {
    current: SigningKey,
    /// The key before the last rotation; PVE still accepts login tickets signed
    /// with it (`verify_ticket` "check with old, rotated key"), never VNC tickets.
    previous: Option<SigningKey>,
}

/// Mints and verifies every ticket and CSRF token.
pub struct TicketAuthority {
    rng: SystemRandom,
    keys: Mutex<Keys>,
    csrf_key: hmac::Key,
}

/// A verified login ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginTicket {
    pub userid: String,
    pub age: i64,
}

impl TicketAuthority {
    pub fn new() -> Result<Self, TicketError> {
        let rng = SystemRandom::new();
        let current = SigningKey::generate(&rng)?;
        let mut secret = [0u8; 32];
        rng.fill(&mut secret)
            .map_err(|_| TicketError::KeyGeneration)?;
        Ok(TicketAuthority {
            csrf_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            keys: Mutex::new(Keys {
                current,
                previous: None,
            }),
            rng,
        })
    }

    fn keys(&self) -> MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the signing key (as PVE's daily auth key rotation does).
    pub fn rotate(&self) -> Result<(), TicketError> {
        let fresh = SigningKey::generate(&self.rng)?;
        let mut keys = self.keys();
        let old = std::mem::replace(&mut keys.current, fresh);
        keys.previous = Some(old);
        Ok(())
    }

    fn assemble(&self, prefix: &str, data: Option<&str>, secret: Option<&str>, now: i64) -> String {
        let mut plain = format!("{prefix}:");
        if let Some(data) = data {
            plain.push_str(data);
            plain.push(':');
        }
        plain.push_str(&hextime(now));
        let full = match secret {
            Some(secret) => format!("{plain}:{secret}"),
            None => plain.clone(),
        };
        let signature = self.keys().current.sign(&full);
        format!("{plain}::{signature}")
    }

    /// A login ticket for `userid`.
    pub fn login_ticket(&self, userid: &str, now: i64) -> String {
        self.assemble("PVE", Some(&escape_colons(userid)), None, now)
    }

    /// Verifies a login ticket; `None` means PVE's "permission denied - invalid PVE ticket".
    pub fn verify_login_ticket(
        &self,
        ticket: &str,
        lifetime: i64,
        now: i64,
    ) -> Option<LoginTicket> {
        let keys = self.keys();
        let found = parse_and_verify(&keys.current, "PVE", ticket, None, -300, lifetime, now)
            .or_else(|| {
                let previous = keys.previous.as_ref()?;
                parse_and_verify(previous, "PVE", ticket, None, -300, lifetime, now)
            })?;
        let (data, age) = found;
        Some(LoginTicket {
            userid: unescape_colons(&data?),
            age,
        })
    }

    /// A VNC ticket binding `authid`, `path` and (behaviour B) `port`.
    pub fn vnc_ticket(&self, authid: &str, path: &str, port: Option<u16>, now: i64) -> String {
        self.assemble("PVEVNC", None, Some(&vnc_secret(authid, path, port)), now)
    }

    /// Verifies a VNC ticket for this identity, path and port: -20 < age < 40.
    pub fn verify_vnc_ticket(
        &self,
        ticket: &str,
        authid: &str,
        path: &str,
        port: Option<u16>,
        now: i64,
    ) -> bool {
        let secret = vnc_secret(authid, path, port);
        parse_and_verify(
            &self.keys().current,
            "PVEVNC",
            ticket,
            Some(&secret),
            -20,
            40,
            now,
        )
        .is_some()
    }

    /// A CSRF prevention token for `userid`.
    pub fn csrf_token(&self, userid: &str, now: i64) -> String {
        let stamp = hextime(now);
        let tag = hmac::sign(&self.csrf_key, format!("{stamp}:{userid}").as_bytes());
        format!("{stamp}:{}", STANDARD_NO_PAD.encode(tag.as_ref()))
    }

    /// Verifies a CSRF token: `^([A-Z0-9]{8}):(\S+)$`, matching HMAC, -300 < age < lifetime.
    pub fn verify_csrf_token(&self, userid: &str, token: &str, lifetime: i64, now: i64) -> bool {
        let Some((stamp, signature)) = token.split_once(':') else {
            return false;
        };
        if !is_stamp(stamp) || signature.is_empty() || signature.contains(char::is_whitespace) {
            return false;
        }
        let Ok(tag) = STANDARD_NO_PAD.decode(signature) else {
            return false;
        };
        if hmac::verify(&self.csrf_key, format!("{stamp}:{userid}").as_bytes(), &tag).is_err() {
            return false;
        }
        let age = now - i64::from_str_radix(stamp, 16).unwrap_or(i64::MIN / 2);
        age > -300 && age < lifetime
    }

    /// Random bytes for passwords and identifiers.
    pub fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0u8; N];
        // SystemRandom only fails when the OS has no randomness at all.
        self.rng
            .fill(&mut bytes)
            .expect("the OS random source works");
        bytes
    }

    /// PVE's `$gen_rand_chars`: each byte masked to 6 bits plus `!`, so 0x21..0x60.
    pub fn vnc_password(&self) -> String {
        self.random_bytes::<8>()
            .iter()
            .map(|b| char::from((b & 0x3F) + b'!'))
            .collect()
    }
}

fn vnc_secret(authid: &str, path: &str, port: Option<u16>) -> String {
    match port {
        Some(port) => format!("{authid}:{path}:{port}"),
        None => format!("{authid}:{path}"),
    }
}

pub fn hextime(now: i64) -> String {
    format!("{:08X}", now.max(0))
}

fn is_stamp(s: &str) -> bool {
    s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// Ticket data is URI-escaped before it goes into the ticket; only `:` (the
/// separator) actually needs it for PVE user ids. (The escaping set is not
/// verified against the newest pve-common; real tickets read `PVE:root@pam:...`.)
fn escape_colons(data: &str) -> String {
    data.replace('%', "%25").replace(':', "%3A")
}

fn unescape_colons(data: &str) -> String {
    data.replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%25", "%")
}

/// `PVE::Ticket::verify_rsa_ticket`: the ticket must match
/// `^(PREFIX:\S+)::([^:\s]+)$`, the signature must verify over
/// `plain[:secret]`, the plain part must match `^PREFIX:(?:(\S+):)?([A-Z0-9]{8})$`
/// and min < age < max. Returns (data, age).
fn parse_and_verify(
    key: &SigningKey,
    prefix: &str,
    ticket: &str,
    secret: Option<&str>,
    min_age: i64,
    max_age: i64,
    now: i64,
) -> Option<(Option<String>, i64)> {
    if ticket.contains(char::is_whitespace) {
        return None;
    }
    let (plain, signature) = ticket.rsplit_once("::")?;
    if signature.is_empty() || signature.contains(':') {
        return None;
    }
    let rest = plain.strip_prefix(prefix)?.strip_prefix(':')?;
    if rest.is_empty() {
        return None;
    }
    let full = match secret {
        Some(secret) => format!("{plain}:{secret}"),
        None => plain.to_string(),
    };
    if !key.verify(&full, signature) {
        return None;
    }
    let (data, stamp) = match rest.rsplit_once(':') {
        Some((data, stamp)) if !data.is_empty() => (Some(data.to_string()), stamp),
        Some(_) => return None,
        None => (None, rest),
    };
    if !is_stamp(stamp) {
        return None;
    }
    let age = now - i64::from_str_radix(stamp, 16).ok()?;
    (age > min_age && age < max_age).then_some((data, age))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 0x6800_0000;

    #[test]
    fn login_tickets_have_pve_s_shape_and_lifetime() {
        let authority = TicketAuthority::new().unwrap();
        let ticket = authority.login_ticket("alice@pve", NOW);
        assert!(ticket.starts_with("PVE:alice@pve:68000000::"), "{ticket}");
        let verified = authority
            .verify_login_ticket(&ticket, 7200, NOW + 10)
            .unwrap();
        assert_eq!(verified.userid, "alice@pve");
        assert_eq!(verified.age, 10);
        assert!(
            authority
                .verify_login_ticket(&ticket, 7200, NOW + 7200)
                .is_none()
        );
        assert!(
            authority
                .verify_login_ticket(&ticket, 7200, NOW - 300)
                .is_none()
        );
        assert!(
            authority
                .verify_login_ticket(&ticket, 7200, NOW - 299)
                .is_some()
        );
        let forged = ticket.replace("alice", "mallory");
        assert!(authority.verify_login_ticket(&forged, 7200, NOW).is_none());
    }

    #[test]
    fn login_tickets_survive_one_rotation() {
        let authority = TicketAuthority::new().unwrap();
        let ticket = authority.login_ticket("alice@pve", NOW);
        authority.rotate().unwrap();
        assert!(authority.verify_login_ticket(&ticket, 7200, NOW).is_some());
    }

    #[test]
    fn vnc_tickets_bind_identity_path_port_and_live_40_seconds() {
        let authority = TicketAuthority::new().unwrap();
        let ticket = authority.vnc_ticket("alice@pve", "/vms/100", Some(5900), NOW);
        assert!(ticket.starts_with("PVEVNC:68000000::"), "{ticket}");
        let ok =
            |t: &str, who, path, port, now| authority.verify_vnc_ticket(t, who, path, port, now);
        assert!(ok(&ticket, "alice@pve", "/vms/100", Some(5900), NOW + 39));
        assert!(!ok(&ticket, "alice@pve", "/vms/100", Some(5900), NOW + 40));
        assert!(!ok(&ticket, "alice@pve", "/vms/100", Some(5900), NOW - 20));
        assert!(!ok(&ticket, "bob@pve", "/vms/100", Some(5900), NOW));
        assert!(!ok(&ticket, "alice@pve", "/vms/101", Some(5900), NOW));
        assert!(!ok(&ticket, "alice@pve", "/vms/100", Some(5901), NOW));
        authority.rotate().unwrap();
        assert!(!ok(&ticket, "alice@pve", "/vms/100", Some(5900), NOW));
    }

    #[test]
    fn csrf_tokens_are_hmac_sha256_without_padding() {
        let authority = TicketAuthority::new().unwrap();
        let token = authority.csrf_token("alice@pve", NOW);
        let (stamp, signature) = token.split_once(':').unwrap();
        assert_eq!(stamp, "68000000");
        assert_eq!(signature.len(), 43);
        assert!(authority.verify_csrf_token("alice@pve", &token, 7200, NOW));
        assert!(!authority.verify_csrf_token("bob@pve", &token, 7200, NOW));
        assert!(!authority.verify_csrf_token("alice@pve", &token, 7200, NOW + 7200));
    }

    #[test]
    fn generated_passwords_use_bytes_0x21_to_0x60() {
        let authority = TicketAuthority::new().unwrap();
        for _ in 0..200 {
            let password = authority.vnc_password();
            assert_eq!(password.len(), 8);
            assert!(
                password.bytes().all(|b| (0x21..=0x60).contains(&b)),
                "{password}"
            );
        }
    }

    #[test]
    fn clock_moves() {
        let clock = Clock::default();
        let before = clock.now();
        assert_eq!(clock.advance(60), 60);
        assert!(clock.now() >= before + 60);
    }
}
