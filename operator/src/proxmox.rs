//! Proxmox password mode: the operator logs in for each session and keeps the
//! session's login ticket fresh. The password never leaves the operator; the
//! proxy only ever holds the ticket, which it uses to mint consoles.

use std::time::{Instant, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use porthole_api::contract::{UpstreamFailure, secret_keys};
use porthole_api::v1alpha1::SessionPhase;
use porthole_pve::api::{Client, LoginTicket};
use porthole_pve::ticket::{self, Renewal};
use tracing::{info, warn};

use crate::context::Context;
use crate::resources::{SessionPlan, secret_text};
use crate::status::{Reason, Verdict};
use crate::target::{ProxmoxAuth, ProxmoxTarget, Target};

/// A plan whose credential is ready for the proxy, and when to renew it.
#[derive(Debug)]
pub struct Authenticated {
    pub plan: SessionPlan,
    pub renew_at: Option<SystemTime>,
}

/// Turns a password-mode plan into one carrying the session's login ticket:
/// keeps the ticket the session has while it is fresh, renews it when it is
/// getting old, logs in when there is none. Other plans pass through.
pub async fn authenticate(
    mut plan: SessionPlan,
    existing: Option<&Secret>,
    ctx: &Context,
) -> Result<Authenticated, Verdict> {
    let Target::Proxmox(target) = &mut plan.target else {
        return Ok(Authenticated {
            plan,
            renew_at: None,
        });
    };
    let ProxmoxAuth::Login { username, password } = &target.auth else {
        return Ok(Authenticated {
            plan,
            renew_at: None,
        });
    };
    let current = existing.and_then(stored_ticket);
    let issued = current.as_ref().and_then(|t| ticket::issued_at(&t.ticket));
    let renew_after = ctx.config.pve_ticket_renew_after;
    let ticket = match (
        ticket::renewal(issued, SystemTime::now(), renew_after),
        current,
    ) {
        (Renewal::Keep { .. }, Some(current)) => current,
        (Renewal::Renew, renewable) => {
            new_ticket(
                ctx,
                target,
                &plan.session_name,
                renewable,
                username,
                password,
            )
            .await?
        }
        _ => new_ticket(ctx, target, &plan.session_name, None, username, password).await?,
    };
    let renew_at = ticket::issued_at(&ticket.ticket).map(|issued| issued + renew_after);
    target.auth = ProxmoxAuth::Ticket(ticket);
    Ok(Authenticated { plan, renew_at })
}

/// Talks to Proxmox, which only a renewal or a login needs: renews `renewable`
/// when given (the ticket is its own password), else or when that fails logs in.
async fn new_ticket(
    ctx: &Context,
    target: &ProxmoxTarget,
    session: &str,
    renewable: Option<LoginTicket>,
    username: &str,
    password: &str,
) -> Result<LoginTicket, Verdict> {
    let client =
        Client::new(&target.url, &target.tls, ctx.config.pve_timeout).map_err(|e| verdict(&e))?;
    if let Some(current) = renewable {
        match mint(ctx, || client.login(&current.username, &current.ticket)).await {
            Ok(renewed) => {
                info!(session, "renewed the Proxmox login ticket");
                return Ok(renewed);
            }
            Err(error) => {
                warn!(session, %error, "cannot renew the Proxmox login ticket; logging in again");
            }
        }
    }
    mint(ctx, || client.login(username, password))
        .await
        .map_err(|e| verdict(&e))
}

/// Runs one login, recording its latency and outcome.
async fn mint<F, Fut>(ctx: &Context, login: F) -> Result<LoginTicket, porthole_pve::api::Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<LoginTicket, porthole_pve::api::Error>>,
{
    let started = Instant::now();
    let result = login().await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.failure().label(),
    };
    ctx.metrics.ticket_minted(outcome, started.elapsed());
    result
}

/// The ticket the session's Secret holds, if it holds a whole one.
fn stored_ticket(secret: &Secret) -> Option<LoginTicket> {
    let ticket = secret_text(secret, secret_keys::PVE_TICKET)?;
    // `PVE:user@realm:HEXTIME::SIG`
    let username = ticket.split(':').nth(1)?.to_string();
    Some(LoginTicket {
        username,
        csrf_token: secret_text(secret, secret_keys::PVE_CSRF_TOKEN)?,
        ticket,
    })
}

/// What a failed login means for the session. Wrong credentials, a missing
/// privilege or a certificate that does not match will not fix themselves: the
/// session fails. Anything else (the API down, a cluster without quorum) may,
/// so the session waits and the reconciler tries again.
fn verdict(error: &porthole_pve::api::Error) -> Verdict {
    let failure = error.failure();
    let phase = match failure {
        UpstreamFailure::BadCredentials
        | UpstreamFailure::TlsVerification
        | UpstreamFailure::PermissionDenied => SessionPhase::Failed,
        _ if matches!(
            error,
            porthole_pve::api::Error::BadUrl { .. } | porthole_pve::api::Error::TlsSettings(_)
        ) =>
        {
            SessionPhase::Failed
        }
        _ => SessionPhase::Pending,
    };
    Verdict::new(
        phase,
        Reason::Upstream(failure),
        format!("cannot log in to Proxmox VE: {error}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(entries: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn a_stored_ticket_needs_both_keys() {
        let whole = secret(&[
            (secret_keys::PVE_TICKET, "PVE:porthole@pve:4EEC61E2::sig"),
            (secret_keys::PVE_CSRF_TOKEN, "4EEC61E2:csrf"),
        ]);
        let ticket = stored_ticket(&whole).unwrap();
        assert_eq!(ticket.username, "porthole@pve");
        assert_eq!(ticket.csrf_token, "4EEC61E2:csrf");
        let half = secret(&[(secret_keys::PVE_TICKET, "PVE:porthole@pve:4EEC61E2::sig")]);
        assert!(stored_ticket(&half).is_none());
    }

    #[test]
    fn lasting_failures_fail_the_session_and_passing_ones_wait() {
        let unauthorized = porthole_pve::api::Error::Unauthorized("authentication failure".into());
        let v = verdict(&unauthorized);
        assert_eq!(
            (v.phase, v.reason),
            (
                SessionPhase::Failed,
                Reason::Upstream(UpstreamFailure::BadCredentials)
            )
        );
        let down = porthole_pve::api::Error::Unreachable {
            url: "https://pve:8006/".into(),
            detail: "connection refused".into(),
        };
        let v = verdict(&down);
        assert_eq!(
            (v.phase, v.reason),
            (
                SessionPhase::Pending,
                Reason::Upstream(UpstreamFailure::Unreachable)
            )
        );
        assert!(v.message.contains("connection refused"));
    }
}
