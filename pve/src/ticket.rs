//! Proxmox VE tickets (`PREFIX:[DATA:]HEXTIME::SIGNATURE`, pve-common
//! Ticket.pm): porthole only ever reads when one was issued, to renew it in time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A login ticket is accepted while younger than this.
pub const LOGIN_TICKET_LIFETIME: Duration = Duration::from_secs(7200);

/// When `ticket` was issued, or `None` when it is not a Proxmox ticket.
pub fn issued_at(ticket: &str) -> Option<SystemTime> {
    let (plain, _signature) = ticket.split_once("::")?;
    let hex = plain.rsplit(':').next()?;
    if hex.len() != 8 {
        return None;
    }
    let secs = u64::from_str_radix(hex, 16).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// What to do with the login ticket a session holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Good for a while: keep it until `renew_at`.
    Keep { renew_at: SystemTime },
    /// Old enough to renew, still valid: renew it (the ticket is its own password).
    Renew,
    /// Missing, unreadable or expired: log in again.
    Login,
}

/// Decides about the ticket issued at `issued`: renew once it is `renew_after`
/// old, log in again once it may have expired (with a minute to spare).
pub fn renewal(issued: Option<SystemTime>, now: SystemTime, renew_after: Duration) -> Renewal {
    let Some(issued) = issued else {
        return Renewal::Login;
    };
    // A ticket from the future (clock skew) counts as new.
    let age = now.duration_since(issued).unwrap_or_default();
    if age < renew_after {
        Renewal::Keep {
            renew_at: issued + renew_after,
        }
    } else if age + Duration::from_secs(60) < LOGIN_TICKET_LIFETIME {
        Renewal::Renew
    } else {
        Renewal::Login
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICKET: &str = "PVE:porthole@pve:4EEC61E2::rsKoApxDTLYPn6H3NNT6iP2mv";

    #[test]
    fn issue_time_comes_from_the_hex_time() {
        assert_eq!(
            issued_at(TICKET),
            Some(UNIX_EPOCH + Duration::from_secs(0x4EEC61E2))
        );
        assert_eq!(
            issued_at("PVEVNC:4EEC61E2::c2ln"),
            Some(UNIX_EPOCH + Duration::from_secs(0x4EEC61E2))
        );
    }

    #[test]
    fn non_tickets_have_no_issue_time() {
        for text in ["", "PVE:user", "PVE:u:XYZ::s", "PVE:u:1234::s"] {
            assert_eq!(issued_at(text), None, "{text}");
        }
    }

    #[test]
    fn a_ticket_is_kept_then_renewed_then_replaced() {
        let issued = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        let at = |secs| issued + Duration::from_secs(secs);
        assert_eq!(
            renewal(Some(issued), at(10), hour),
            Renewal::Keep {
                renew_at: issued + hour
            }
        );
        assert_eq!(renewal(Some(issued), at(3600), hour), Renewal::Renew);
        assert_eq!(renewal(Some(issued), at(7139), hour), Renewal::Renew);
        assert_eq!(renewal(Some(issued), at(7141), hour), Renewal::Login);
        assert_eq!(renewal(None, at(0), hour), Renewal::Login);
    }
}
