//! The dereference step: reads what the session names (its Hypervisor, the
//! Hypervisor's credentials Secret, the session Secret, its namespace's labels,
//! its recording claim), and, once its children are applied, whether its
//! Service routes to its pod and who watches.

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use porthole_api::v1alpha1::{ConsoleSession, Hypervisor};
use tracing::warn;

use super::Result;
use super::apply::Children;
use crate::context::Context;
use crate::resources::secret_text;
use crate::status::SeenViewers;
use crate::validate::{Credentials, Observed, ProxmoxCredentials, RecordingClaim, recording_claim};
use crate::viewers;

/// Reads what the session refers to. A recorded session's claim is looked up
/// only before its pod is started: a running pod keeps the claim it mounted.
pub(super) async fn dereference(
    session: &ConsoleSession,
    ctx: &Context,
    children: &Children,
    pod_exists: bool,
) -> Result<Observed> {
    let hypervisors: Api<Hypervisor> = Api::all(ctx.client.clone());
    let hypervisor = hypervisors.get_opt(&session.spec.hypervisor).await?;
    let credentials = match hypervisor.as_ref() {
        Some(hv) => read_credentials(ctx, hv).await?,
        None => Credentials::NotConfigured,
    };
    // The claim is the administrator's, in porthole's namespace; a session
    // whose recording cannot be planned is told why by `plan`.
    let claim = hypervisor
        .as_ref()
        .filter(|_| !pod_exists)
        .and_then(|hv| recording_claim(session, hv, &ctx.config).ok().flatten());
    let session_secret = children.secrets.get_opt(&children.name).await?;
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let namespace_labels = namespaces
        .get_opt(&session.namespace().unwrap_or_default())
        .await?
        .and_then(|ns| ns.metadata.labels)
        .unwrap_or_default();
    let recording_claim = match claim {
        Some(claim) => {
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &ctx.config.namespace);
            RecordingClaim::found(claims.get_opt(&claim).await?.as_ref())
        }
        None => RecordingClaim::NotChecked,
    };
    Ok(Observed {
        hypervisor,
        namespace_labels,
        credentials,
        session_secret,
        recording_claim,
    })
}

/// Why a Hypervisor's Secret reference cannot be followed: it names another
/// namespace than porthole's, the only one whose Secrets the operator reads.
fn foreign_namespace(namespace: Option<&str>, home: &str) -> Option<Credentials> {
    let named = namespace.filter(|ns| *ns != home)?;
    Some(Credentials::Missing(format!(
        "the Hypervisor names a Secret in namespace {named:?}: credentials must be in porthole's \
         namespace {home:?} (leave the reference's namespace unset)"
    )))
}

/// Reads the Secret a Hypervisor names for its credentials, in porthole's
/// namespace.
async fn read_credentials(ctx: &Context, hypervisor: &Hypervisor) -> Result<Credentials> {
    let home = ctx.config.namespace.as_str();
    let secret_value =
        |secret: &Option<Secret>, key: &str| secret.as_ref().and_then(|s| secret_text(s, key));
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), home);
    if let Some(vnc) = &hypervisor.spec.vnc {
        let Some(reference) = &vnc.password_secret_ref else {
            return Ok(Credentials::NotConfigured);
        };
        if let Some(refused) = foreign_namespace(reference.namespace.as_deref(), home) {
            return Ok(refused);
        }
        let secret = secrets.get_opt(&reference.name).await?;
        return Ok(match secret_value(&secret, &reference.key) {
            Some(password) => Credentials::VncPassword(password),
            None => Credentials::Missing(format!(
                "Secret {home}/{} has no key {:?}",
                reference.name, reference.key
            )),
        });
    }
    let Some(pve) = &hypervisor.spec.proxmox else {
        return Ok(Credentials::NotConfigured);
    };
    let reference = &pve.credentials_secret_ref;
    if let Some(refused) = foreign_namespace(reference.namespace.as_deref(), home) {
        return Ok(refused);
    }
    let secret = secrets.get_opt(&reference.name).await?;
    let get = |key| secret_value(&secret, key);
    use porthole_api::contract::proxmox_credentials as keys;
    Ok(
        match (
            get(keys::USERNAME),
            get(keys::PASSWORD),
            get(keys::TOKEN_ID),
            get(keys::TOKEN_SECRET),
        ) {
            (Some(username), Some(password), _, _) => {
                Credentials::Proxmox(ProxmoxCredentials::Password { username, password })
            }
            (_, _, Some(id), Some(secret)) => {
                Credentials::Proxmox(ProxmoxCredentials::ApiToken(format!("{id}={secret}")))
            }
            _ if secret.is_none() => {
                Credentials::Missing(format!("Secret {home}/{} does not exist", reference.name))
            }
            _ => Credentials::Missing(format!(
                "Secret {home}/{} needs keys {:?} and {:?}, or {:?} and {:?}",
                reference.name,
                keys::USERNAME,
                keys::PASSWORD,
                keys::TOKEN_ID,
                keys::TOKEN_SECRET
            )),
        },
    )
}

/// Reads who watches from the proxy, and makes sure a change brings the
/// session back at once. A proxy that does not answer keeps the last known
/// viewers (`None`): a status that is late beats one that lies.
pub(super) async fn read_viewers(
    session: &ConsoleSession,
    ctx: &Context,
    pod: &Pod,
    token: &str,
) -> Option<SeenViewers> {
    let pod_ip = pod.status.as_ref()?.pod_ip.as_deref()?;
    match viewers::read(&ctx.http, pod_ip, token, None).await {
        Ok(report) => {
            ctx.viewer_watches.ensure(
                ObjectRef::from_obj(session),
                pod_ip,
                token,
                report.generation,
            );
            Some(SeenViewers {
                status: viewers::status(&report),
                last_address: report.last_address,
            })
        }
        Err(error) => {
            warn!(session = %session.name_any(), %error, "could not read the viewers");
            None
        }
    }
}

pub(super) async fn service_routes_to(
    ctx: &Context,
    ns: &str,
    service: &str,
    pod: &Pod,
) -> Result<bool> {
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("kubernetes.io/service-name={service}");
    let list = slices
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?;
    let Some(pod_uid) = pod.metadata.uid.as_deref() else {
        return Ok(false);
    };
    Ok(list
        .items
        .iter()
        .flat_map(|slice| &slice.endpoints)
        .any(|endpoint| {
            let this_pod = endpoint
                .target_ref
                .as_ref()
                .is_some_and(|target| target.uid.as_deref() == Some(pod_uid));
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(false);
            this_pod && ready
        }))
}
