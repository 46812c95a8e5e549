//! The reconcile pipeline for one ConsoleSession. Its children live in
//! porthole's sessions namespace, without owner references (those cannot cross
//! namespaces): the session's finalizer removes them when it is deleted, and
//! the sweep ([`crate::sweep`]) removes any whose session is gone.
//!
//! 0. **deleted?** the finalizer's cleanup removes the children;
//! 1. **finished?** a final session only makes sure its children are gone;
//! 2. **dereference** the Hypervisor, its password Secret, the session Secret
//!    and, for a recorded session, its PersistentVolumeClaim;
//! 3. **ended?** a proxy pod that exited ends the session with its end reason;
//! 4. **validate** into a [`SessionPlan`](crate::resources::SessionPlan) (pure);
//! 5. **apply** the Secret, Pod and Service by server-side apply;
//! 6. **update status** from what the Pod and Service report.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use porthole_api::contract::FINALIZER;
use porthole_api::v1alpha1::{ConsoleSession, Hypervisor, SessionPhase};
use rand::RngCore;
use serde_json::json;
use tracing::{info, warn};

use crate::context::Context;
use crate::naming::child_name;
use crate::proxmox::{Authenticated, authenticate};
use crate::resources::{SessionPlan, secret_text};
use crate::status::{Reason, SeenViewers, Verdict, pod_is_ready, pod_outcome};
use crate::validate::{
    Credentials, Observed, ProxmoxCredentials, RecordingClaim, plan, recording_claim,
    waiting_deadline,
};
use crate::viewers;

/// The one field manager for everything the operator writes.
pub const MANAGER: &str = "porthole-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the session's finalizer failed, or its cleanup did.
    #[error("finalizer {FINALIZER}: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                _ => "finalizer",
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Keeps the session's finalizer in place while it lives, and runs the
/// cleanup when it is deleted.
pub async fn reconcile(session: Arc<ConsoleSession>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer();
    let api: Api<ConsoleSession> =
        Api::namespaced(ctx.client.clone(), &session.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, session, |event| async {
        match event {
            finalizer::Event::Apply(session) => run(session, &ctx).await,
            finalizer::Event::Cleanup(session) => clean_up(&session, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The session's children, in porthole's sessions namespace.
fn children_of(ctx: &Context, session: &ConsoleSession) -> Children {
    let uid = session.uid().unwrap_or_default();
    Children::new(
        ctx,
        ctx.config.sessions_namespace(),
        &child_name(&session.name_any(), &uid),
    )
}

/// The session is being deleted: its children go first, then the finalizer.
async fn clean_up(session: &ConsoleSession, ctx: &Context) -> Result<Action> {
    ctx.viewer_watches.stop(&ObjectRef::from_obj(session));
    let uid = session.uid().unwrap_or_default();
    if !ctx.cleaned_up.contains(&uid) {
        children_of(ctx, session).delete_all().await?;
        info!(session = %session.name_any(), "deleted the session's proxy pod and what went with it");
    }
    Ok(Action::await_change())
}

async fn run(session: Arc<ConsoleSession>, ctx: &Context) -> Result<Action> {
    let children = children_of(ctx, &session);
    let ns = ctx.config.sessions_namespace();
    let previous = session.status.as_ref();

    if let Some(ended) = previous.filter(|s| s.phase.is_some_and(SessionPhase::is_final)) {
        ctx.viewer_watches.stop(&ObjectRef::from_obj(&*session));
        let uid = session.uid().unwrap_or_default();
        if !ctx.cleaned_up.contains(&uid) {
            children.delete_all().await?;
            ctx.cleaned_up.insert(&uid);
        }
        return expire_after_ttl(&session, ctx, ended.ended_at.as_ref()).await;
    }

    let existing_pod = children.pods.get_opt(&children.name).await?;
    if let Some(going) = existing_pod
        .as_ref()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
    {
        return wait_for_replacement(&session, ctx, &children, &going.name_any()).await;
    }
    if let Some(verdict) = existing_pod.as_ref().and_then(pod_outcome) {
        finish(&session, ctx, &children, verdict).await?;
        return Ok(Action::await_change());
    }
    if existing_pod.is_none() && run_once_used(&session) {
        // A new pod would not know its one viewer had been: it would let another in.
        let verdict = Verdict::new(
            SessionPhase::Completed,
            Reason::Completed,
            "the run-once session's viewer has been, and its proxy pod is gone",
        );
        finish(&session, ctx, &children, verdict).await?;
        return Ok(Action::await_change());
    }

    if let Some(deadline) = published_deadline_passed(&session) {
        // Past the deadline the session published (for the spec it has now):
        // it ends, with nothing more to look up (a proxy that ended
        // before it has said why above). Many sessions can fall due
        // at once; each reaching its status write sooner keeps them on time.
        finish(&session, ctx, &children, expired(deadline)).await?;
        return Ok(Action::await_change());
    }
    let observed = dereference(&session, ctx, &children, existing_pod.is_some()).await?;
    let plan = match plan(&session, &observed, &ctx.config, new_token) {
        Ok(plan) => plan,
        // Watches on Hypervisors bring a waiting session back; the retry is a backstop.
        // Claims are not watched (that would take list and watch on every
        // claim in the cluster): a session waiting for one looks again sooner.
        Err(verdict) => {
            let retry = match verdict.reason {
                Reason::RecordingClaimNotFound => Duration::from_secs(15),
                _ => Duration::from_secs(60),
            };
            return settle(&session, ctx, &children, verdict, retry).await;
        }
    };

    let now = Timestamp::now();
    if now >= plan.expires_at {
        finish(&session, ctx, &children, expired(Time(plan.expires_at))).await?;
        return Ok(Action::await_change());
    }
    let Authenticated { plan, renew_at } =
        match authenticate(plan, observed.session_secret.as_ref(), ctx).await {
            Ok(authenticated) => authenticated,
            Err(verdict) => {
                return settle(&session, ctx, &children, verdict, Duration::from_secs(15)).await;
            }
        };
    let secret_exists = observed.session_secret.is_some();
    let (pod, service) =
        apply(ctx, &children, &plan, &session, existing_pod, secret_exists).await?;
    // Ready means a viewer can connect now: the pod is ready *and* the Service
    // routes to it, which happens only once its EndpointSlice lists *this* pod
    // as ready (a replaced pod's endpoint can linger there for a while).
    let routed = pod_is_ready(&pod) && service_routes_to(ctx, ns, &children.name, &pod).await?;
    let url = plan.exposure.url(
        &service,
        &pod,
        ctx.config.node_address.as_deref(),
        &plan.token,
    );
    let mut verdict = match url {
        Ok(url) if routed => {
            let viewers = read_viewers(&session, ctx, &pod, &plan.token).await;
            open_verdict(url, viewers)
        }
        Ok(_) => Verdict::new(
            SessionPhase::Pending,
            Reason::ProxyStarting,
            "waiting for the console proxy to become ready",
        ),
        Err(waiting) => Verdict::new(SessionPhase::Pending, Reason::AwaitingAddress, waiting),
    };
    verdict.expires_at = Some(Time(plan.expires_at));
    update_status(&session, ctx, &verdict).await?;
    // Wake up exactly at the deadline. The deadline comes from the resource, so a
    // restarted operator computes the same one. Measured now, not when this
    // reconcile began: the requeue counts from the reconcile's end.
    let until_expiry = time_until(plan.expires_at);
    let until_renewal = renew_at
        .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
        .unwrap_or(Duration::MAX);
    Ok(Action::requeue(
        until_expiry
            .min(until_renewal)
            .min(Duration::from_secs(300)),
    ))
}

/// The session's pod is being deleted by someone else: the operator deletes
/// pods only of sessions that have ended. A drain, an eviction or `kubectl
/// delete pod` stops the proxy, which then reports `completed`: that says
/// nothing about the session, so it is not taken as its end. Once the pod is
/// gone (the watch brings the session back) another starts at the same URL.
async fn wait_for_replacement(
    session: &ConsoleSession,
    ctx: &Context,
    children: &Children,
    pod: &str,
) -> Result<Action> {
    let verdict = Verdict::new(
        SessionPhase::Pending,
        Reason::ProxyStopping,
        format!(
            "console proxy pod {pod} is being deleted; another starts at the same URL once it \
             is gone, and viewers must reconnect"
        ),
    );
    settle(session, ctx, children, verdict, Duration::from_secs(10)).await
}

/// The deadline in the session's status, once it has passed, if that status
/// describes the session's current spec (a changed timeout is planned anew).
fn published_deadline_passed(session: &ConsoleSession) -> Option<Time> {
    let status = session.status.as_ref()?;
    let current = status.observed_generation.is_some()
        && status.observed_generation == session.meta().generation;
    let deadline = status.expires_at.as_ref()?;
    (current && Timestamp::now() >= deadline.0).then(|| deadline.clone())
}

/// The session ended at its deadline, whenever that is noticed: the proxy
/// stops serving then by itself, and a session that never started served
/// nobody after.
fn expired(deadline: Time) -> Verdict {
    Verdict {
        expires_at: Some(deadline.clone()),
        ended_at: Some(deadline),
        ..Verdict::new(
            SessionPhase::Expired,
            Reason::Expired,
            "the session reached its time limit",
        )
    }
}

/// Whether a run-once session has had its one viewer, as the proxy reported.
fn run_once_used(session: &ConsoleSession) -> bool {
    session.spec.run_once == Some(true)
        && session
            .status
            .as_ref()
            .and_then(|s| s.viewers.as_ref())
            .is_some_and(|v| v.connections > 0)
}

/// How long from now until `at`; zero once it has passed.
fn time_until(at: Timestamp) -> Duration {
    Duration::try_from(Timestamp::now().duration_until(at)).unwrap_or(Duration::ZERO)
}

/// Deletes a finished session once `ttlSecondsAfterFinished` has passed since it
/// ended, like a Job; until then, wakes up when it is due.
async fn expire_after_ttl(
    session: &ConsoleSession,
    ctx: &Context,
    ended_at: Option<&Time>,
) -> Result<Action> {
    let (Some(ttl), Some(ended_at)) = (session.spec.ttl_seconds_after_finished, ended_at) else {
        return Ok(Action::await_change());
    };
    let due = ended_at.0 + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(ttl));
    let now = Timestamp::now();
    if now < due {
        return Ok(Action::requeue(time_until(due)));
    }
    let api: Api<ConsoleSession> =
        Api::namespaced(ctx.client.clone(), &session.namespace().unwrap_or_default());
    info!(session = %session.name_any(), ttl, "deleting the finished session (ttlSecondsAfterFinished)");
    ignore_not_found(
        api.delete(&session.name_any(), &DeleteParams::background())
            .await
            .map(drop),
    )?;
    Ok(Action::await_change())
}

/// The session's Pod, Service, Secret, NetworkPolicy and Ingress, which share
/// one name.
struct Children {
    name: String,
    pods: Api<Pod>,
    services: Api<Service>,
    secrets: Api<Secret>,
    network_policies: Api<NetworkPolicy>,
    ingresses: Api<Ingress>,
}

impl Children {
    fn new(ctx: &Context, ns: &str, name: &str) -> Self {
        Children {
            name: name.to_string(),
            pods: Api::namespaced(ctx.client.clone(), ns),
            services: Api::namespaced(ctx.client.clone(), ns),
            secrets: Api::namespaced(ctx.client.clone(), ns),
            network_policies: Api::namespaced(ctx.client.clone(), ns),
            ingresses: Api::namespaced(ctx.client.clone(), ns),
        }
    }

    /// Deletes everything the session created; already gone is fine.
    async fn delete_all(&self) -> Result<()> {
        let dp = DeleteParams::background();
        ignore_not_found(self.pods.delete(&self.name, &dp).await.map(drop))?;
        ignore_not_found(self.services.delete(&self.name, &dp).await.map(drop))?;
        ignore_not_found(self.secrets.delete(&self.name, &dp).await.map(drop))?;
        ignore_not_found(self.ingresses.delete(&self.name, &dp).await.map(drop))?;
        ignore_not_found(
            self.network_policies
                .delete(&self.name, &dp)
                .await
                .map(drop),
        )?;
        Ok(())
    }
}

fn ignore_not_found(result: kube::Result<()>) -> kube::Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other,
    }
}

/// Reads what the session refers to. A recorded session's claim is looked up
/// only before its pod is started: a running pod keeps the claim it mounted.
async fn dereference(
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

/// Applies the Secret, NetworkPolicy and Service, and creates the Pod unless
/// `existing_pod` is there (a Pod's spec is immutable: a running session keeps
/// the pod it started with). Returns the Pod and the Service as applied.
async fn apply(
    ctx: &Context,
    children: &Children,
    plan: &SessionPlan,
    session: &ConsoleSession,
    existing_pod: Option<Pod>,
    secret_exists: bool,
) -> Result<(Pod, Service)> {
    let params = PatchParams::apply(MANAGER).force();
    // An immutable Secret keeps what the session started with: a password the
    // Hypervisor's Secret changed since must not fail every later reconcile.
    if !secret_exists || plan.target.renews() {
        children
            .secrets
            .patch(&children.name, &params, &Patch::Apply(&plan.secret()))
            .await?;
    }
    // The policy goes first, so the pod never runs unconfined.
    if ctx.config.network_policies {
        children
            .network_policies
            .patch(
                &children.name,
                &params,
                &Patch::Apply(&plan.network_policy()),
            )
            .await?;
    }
    let pod = match existing_pod {
        Some(pod) => pod,
        None => {
            // A session that published a URL, or saw its pod deleted, had a
            // pod: it was deleted or evicted under its viewers. Its
            // replacement serves the same URL, token and deadline; say so,
            // since the viewers were cut off.
            let replacing = session.status.as_ref().is_some_and(|s| {
                s.url.is_some() || s.reason.as_deref() == Some(Reason::ProxyStopping.as_str())
            });
            let pod = children
                .pods
                .patch(&children.name, &params, &Patch::Apply(&plan.pod()))
                .await?;
            info!(session = %session.name_any(), pod = %children.name, replacing, "created console proxy pod");
            let (type_, reason, note) = if replacing {
                (
                    EventType::Warning,
                    "ProxyReplaced",
                    format!(
                        "console proxy pod {} was gone; started another at the same URL: viewers must reconnect",
                        children.name
                    ),
                )
            } else {
                (
                    EventType::Normal,
                    "Created",
                    format!("created console proxy pod {}", children.name),
                )
            };
            publish(ctx, session, type_, reason, note).await;
            pod
        }
    };
    let service = children
        .services
        .patch(&children.name, &params, &Patch::Apply(&plan.service()))
        .await?;
    match plan.ingress() {
        Some(ingress) => {
            children
                .ingresses
                .patch(&children.name, &params, &Patch::Apply(&ingress))
                .await?;
        }
        // The session may have moved away from Ingress exposure.
        None => ignore_not_found(
            children
                .ingresses
                .delete(&children.name, &DeleteParams::background())
                .await
                .map(drop),
        )?,
    }
    Ok((pod, service))
}

/// Reads who watches from the proxy, and makes sure a change brings the
/// session back at once. A proxy that does not answer keeps the last known
/// viewers (`None`): a status that is late beats one that lies.
async fn read_viewers(
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

/// Ready, or Connected while somebody watches.
fn open_verdict(url: String, viewers: Option<SeenViewers>) -> Verdict {
    let watching = viewers.as_ref().map_or(0, |v| v.status.count);
    let base = if watching > 0 {
        Verdict::new(
            SessionPhase::Connected,
            Reason::ViewerConnected,
            format!("{watching} viewer(s) connected"),
        )
    } else {
        Verdict::new(
            SessionPhase::Ready,
            Reason::ProxyReady,
            "the console is ready",
        )
    };
    Verdict {
        url: Some(url),
        viewers: viewers.map(Box::new),
        ..base
    }
}

async fn service_routes_to(ctx: &Context, ns: &str, service: &str, pod: &Pod) -> Result<bool> {
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

/// Ends this reconcile on a verdict that stops it: a final one finishes the
/// session; any other is reported, and the session is looked at again after
/// `retry`, or at its deadline if sooner: a session that cannot start still
/// expires on time.
async fn settle(
    session: &ConsoleSession,
    ctx: &Context,
    children: &Children,
    mut verdict: Verdict,
    mut retry: Duration,
) -> Result<Action> {
    if let Some(deadline) = waiting_deadline(session).filter(|_| !verdict.phase.is_final()) {
        if Timestamp::now() >= deadline {
            verdict = Verdict {
                expires_at: Some(Time(deadline)),
                ended_at: Some(Time(deadline)),
                ..Verdict::new(
                    SessionPhase::Expired,
                    Reason::Expired,
                    format!(
                        "the session reached its time limit before it could start: {}",
                        verdict.message
                    ),
                )
            };
        } else {
            retry = retry.min(time_until(deadline));
        }
    }
    if verdict.phase.is_final() {
        finish(session, ctx, children, verdict).await?;
        Ok(Action::await_change())
    } else {
        update_status(session, ctx, &verdict).await?;
        Ok(Action::requeue(retry))
    }
}

/// Records a final verdict, then removes everything the session created.
async fn finish(
    session: &ConsoleSession,
    ctx: &Context,
    children: &Children,
    verdict: Verdict,
) -> Result<()> {
    update_status(session, ctx, &verdict).await?;
    children.delete_all().await?;
    // The status write brings the session back, final: nothing to delete again.
    ctx.cleaned_up.insert(&session.uid().unwrap_or_default());
    Ok(())
}

/// Writes the status when it changed, with an Event for each phase transition.
async fn update_status(session: &ConsoleSession, ctx: &Context, verdict: &Verdict) -> Result<()> {
    let previous = session.status.as_ref();
    let generation = session.meta().generation;
    let status = verdict.to_status(previous, generation);
    if previous == Some(&status) {
        return Ok(());
    }
    let api: Api<ConsoleSession> =
        Api::namespaced(ctx.client.clone(), &session.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": "porthole.dev/v1alpha1",
        "kind": "ConsoleSession",
        "status": status,
    });
    api.patch_status(
        &session.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if let Some(now) = &status.viewers {
        let before = previous.and_then(|p| p.viewers.as_ref());
        let address = verdict
            .viewers
            .as_ref()
            .and_then(|v| v.last_address.as_deref());
        for (reason, note) in viewers::changes(before, now, address) {
            info!(session = %session.name_any(), reason, "{note}");
            publish(ctx, session, EventType::Normal, reason, note).await;
        }
    }
    let previous_phase = previous.and_then(|p| p.phase);
    let phase_changed = previous_phase != Some(verdict.phase);
    let reason_changed =
        previous.and_then(|p| p.reason.as_deref()) != Some(verdict.reason.as_str());
    // Viewers coming and going have their own Events (above).
    let viewers_only = previous_phase.is_some_and(SessionPhase::is_open) && verdict.phase.is_open();
    if (phase_changed || reason_changed) && !viewers_only {
        ctx.metrics.phase_entered(verdict.phase);
        let type_ = if verdict.phase == SessionPhase::Failed {
            EventType::Warning
        } else {
            EventType::Normal
        };
        info!(session = %session.name_any(), phase = ?verdict.phase, reason = verdict.reason.as_str(), "{}", verdict.message);
        publish(
            ctx,
            session,
            type_,
            verdict.reason.as_str(),
            verdict.message.clone(),
        )
        .await;
    }
    Ok(())
}

/// Events are best effort: a failure to record one must not fail the reconcile.
async fn publish(
    ctx: &Context,
    session: &ConsoleSession,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &session.object_ref(&())).await {
        warn!(session = %session.name_any(), %error, "could not record an Event");
    }
}

/// 32 random bytes, URL-safe base64: 256 bits an attacker cannot guess.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn error_policy(session: Arc<ConsoleSession>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(session = %session.name_any(), %error, "reconcile failed, retrying");
    ctx.metrics.reconcile_failed(error.category());
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    fn session(run_once: bool, connections: u64) -> super::ConsoleSession {
        serde_json::from_value(super::json!({
            "apiVersion": "porthole.dev/v1alpha1", "kind": "ConsoleSession",
            "metadata": {"name": "s", "namespace": "n"},
            "spec": {"hypervisor": "h", "vm": {"port": 5900}, "runOnce": run_once},
            "status": {"viewers": {"count": 0, "connections": connections}},
        }))
        .unwrap()
    }

    #[test]
    fn a_run_once_session_is_used_once_a_viewer_has_connected() {
        assert!(super::run_once_used(&session(true, 1)));
        assert!(!super::run_once_used(&session(true, 0)));
        assert!(!super::run_once_used(&session(false, 3)));
    }

    #[test]
    fn a_deadline_that_passed_is_due_now_not_as_far_in_the_future() {
        let past = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(30);
        assert_eq!(super::time_until(past), Duration::ZERO);
        let future = Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(30);
        let left = super::time_until(future);
        assert!(
            left > Duration::from_secs(29) && left <= Duration::from_secs(30),
            "{left:?}"
        );
    }

    use super::*;

    #[test]
    fn a_published_deadline_counts_only_once_passed_and_for_the_current_spec() {
        let with = |expires_in: i64, observed: i64| {
            let mut s = session(false, 0);
            s.metadata.generation = Some(2);
            let status = s.status.get_or_insert_with(Default::default);
            status.observed_generation = Some(observed);
            status.expires_at = Some(Time(
                Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(expires_in),
            ));
            s
        };
        assert!(published_deadline_passed(&with(-5, 2)).is_some());
        assert!(published_deadline_passed(&with(60, 2)).is_none());
        // The timeout changed since: the deadline is planned anew.
        assert!(published_deadline_passed(&with(-5, 1)).is_none());
        assert!(published_deadline_passed(&session(false, 0)).is_none());
    }

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
