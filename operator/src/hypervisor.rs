//! Hypervisors need little: their status says whether TLS verification is
//! switched off, so nobody runs that way by accident.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use porthole_api::v1alpha1::{Hypervisor, HypervisorStatus};
use tracing::{info, warn};

use crate::context::Context;
use crate::reconcile::{Error, MANAGER};

pub const CONDITION_INSECURE_TLS: &str = "InsecureTLS";

/// The status a Hypervisor should have. Pure.
pub fn desired_status(hypervisor: &Hypervisor) -> HypervisorStatus {
    let insecure = hypervisor
        .spec
        .proxmox
        .as_ref()
        .and_then(|p| p.tls.as_ref()?.insecure_skip_verify)
        .unwrap_or(false);
    let generation = hypervisor.meta().generation;
    let (status, reason, message) = if insecure {
        (
            "True",
            "VerificationDisabled",
            "tls.insecureSkipVerify is set: the Proxmox API's certificate is not verified, so anyone on the network path can read consoles and tickets",
        )
    } else {
        (
            "False",
            "VerificationEnabled",
            "the hypervisor's certificate is verified",
        )
    };
    let previous = hypervisor.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == CONDITION_INSECURE_TLS)
    });
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    HypervisorStatus {
        observed_generation: generation,
        conditions: vec![Condition {
            type_: CONDITION_INSECURE_TLS.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time,
            observed_generation: generation,
        }],
    }
}

async fn reconcile(hypervisor: Arc<Hypervisor>, ctx: Arc<Context>) -> Result<Action, Error> {
    let status = desired_status(&hypervisor);
    if hypervisor.status.as_ref() == Some(&status) {
        return Ok(Action::await_change());
    }
    let api: Api<Hypervisor> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({
        "apiVersion": "porthole.dev/v1alpha1",
        "kind": "Hypervisor",
        "status": status,
    });
    api.patch_status(
        &hypervisor.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    let was_insecure = hypervisor
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == CONDITION_INSECURE_TLS)
        })
        .is_some_and(|c| c.status == "True");
    let insecure = status.conditions[0].status == "True";
    if insecure && !was_insecure {
        warn!(hypervisor = %hypervisor.name_any(), "TLS verification is switched off");
        let event = Event {
            type_: EventType::Warning,
            reason: "InsecureTLS".to_string(),
            note: Some(status.conditions[0].message.clone()),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(error) = ctx
            .recorder
            .publish(&event, &hypervisor.object_ref(&()))
            .await
        {
            warn!(%error, "could not record an Event");
        }
    }
    Ok(Action::await_change())
}

fn error_policy(hypervisor: Arc<Hypervisor>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(hypervisor = %hypervisor.name_any(), %error, "reconcile failed, retrying");
    ctx.metrics.reconcile_failed(error.category());
    Action::requeue(Duration::from_secs(5))
}

/// Runs the Hypervisor controller until a shutdown signal arrives.
pub async fn run_controller(client: Client, ctx: Arc<Context>) {
    Controller::new(Api::<Hypervisor>::all(client), watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
    info!("hypervisor controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use porthole_api::v1alpha1::{HypervisorSpec, ProxmoxHypervisor, ProxmoxTls, SecretRef};

    fn proxmox(insecure: Option<bool>) -> Hypervisor {
        Hypervisor::new(
            "pve",
            HypervisorSpec {
                vnc: None,
                proxmox: Some(ProxmoxHypervisor {
                    url: "https://pve:8006".into(),
                    credentials_secret_ref: SecretRef {
                        namespace: None,
                        name: "pve".into(),
                    },
                    tls: Some(ProxmoxTls {
                        insecure_skip_verify: insecure,
                        ..ProxmoxTls::default()
                    }),
                    vm_ids: None,
                }),
                allowed_namespaces: None,
                default_timeout: None,
                max_timeout: None,
                recording: None,
            },
        )
    }

    #[test]
    fn skipping_verification_shows_as_a_condition() {
        let status = desired_status(&proxmox(Some(true)));
        assert_eq!(status.conditions[0].type_, "InsecureTLS");
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(desired_status(&proxmox(None)).conditions[0].status, "False");
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let mut hv = proxmox(Some(true));
        let first = desired_status(&hv);
        hv.status = Some(first.clone());
        assert_eq!(desired_status(&hv), first);
    }
}
