//! Talking to the cluster: the client (from `--kubeconfig`, `KUBECONFIG` or `~/.kube/config`,
//! `--context`, `-n` as kubectl takes them), reading a [`Snapshot`], and patching a Deployer.

use deployer_operator::{
    api::Deployer,
    resources::{DEPLOYER_LABEL, is_owned_by},
};
use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::{
    Api, Client, Config,
    api::{ListParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::Value;

use crate::{cli::Global, snapshot::Snapshot};

/// The field manager of the plugin's writes (it shows in `metadata.managedFields`).
pub const MANAGER: &str = "kubectl-deployer";

/// An error to print, one line, prefixed with `error: `.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) if !s.message.is_empty() => Error(s.message),
            e => Error(e.to_string()),
        }
    }
}

/// Result with the plugin's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client and the namespace the command is about.
#[derive(Clone)]
pub struct Target {
    /// The client.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

impl Target {
    /// Connects as kubectl would: `--kubeconfig` (else `KUBECONFIG`, else `~/.kube/config`, else
    /// the in-cluster service account), with `--context` (else the current context).
    pub async fn connect(global: &Global) -> Result<Target> {
        let options = KubeConfigOptions { context: global.context.clone(), ..KubeConfigOptions::default() };
        let mut config = match &global.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| Error(format!("reading kubeconfig {}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| Error(format!("{e}")))?
            }
            None => match Config::from_kubeconfig(&options).await {
                Ok(config) => config,
                Err(e) if global.context.is_some() => return Err(Error(format!("kubeconfig: {e}"))),
                Err(e) => Config::incluster().map_err(|_| Error(format!("no usable kubeconfig: {e}")))?,
            },
        };
        // kube honours HTTPS_PROXY but not NO_PROXY (without its proxy features): never send a
        // loopback API server's traffic to a proxy.
        if matches!(config.cluster_url.host(), Some("127.0.0.1" | "localhost" | "[::1]" | "::1")) {
            config.proxy_url = None;
        }
        let namespace = global.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| Error(format!("building the client: {e}")))?;
        Ok(Target { client, namespace })
    }

    /// The Deployers of the namespace.
    pub fn deployers(&self) -> Api<Deployer> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The Deployer `name`, or an error that says it does not exist.
    pub async fn deployer(&self, name: &str) -> Result<Deployer> {
        self.deployers().get_opt(name).await?.ok_or_else(|| self.not_found(name))
    }

    /// The error for a Deployer that does not exist.
    pub fn not_found(&self, name: &str) -> Error {
        Error(format!("deployer {name:?} not found in namespace {:?}", self.namespace))
    }

    /// The Deployer `name` (if any), the Deployments it owns and, with `events`, the Events
    /// about it.
    pub async fn snapshot(&self, name: &str, events: bool) -> Result<Snapshot> {
        let deployers = self.deployers();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let owned = ListParams::default().labels(&format!("{DEPLOYER_LABEL}={name}"));
        let (deployer, deployments, events) =
            tokio::try_join!(deployers.get_opt(name), deployments.list(&owned), async {
                if events { self.events(name).await.map(Some) } else { Ok(None) }
            },)?;
        Ok(snapshot_of(&self.namespace, name, deployer, deployments.items, events.unwrap_or_default()))
    }

    async fn events(&self, name: &str) -> Result<Vec<Event>, kube::Error> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api.list(&ListParams::default().fields(&events_selector(name))).await?.items)
    }

    /// Merge-patches the Deployer `name` as the plugin's field manager.
    pub async fn patch(&self, name: &str, patch: &Value) -> Result<Deployer> {
        let params = PatchParams { field_manager: Some(MANAGER.into()), ..PatchParams::default() };
        match self.deployers().patch(name, &params, &Patch::Merge(patch)).await {
            Err(kube::Error::Api(s)) if s.code == 404 => Err(self.not_found(name)),
            other => Ok(other?),
        }
    }
}

/// The field selector of the Events about a Deployer.
pub fn events_selector(name: &str) -> String {
    format!("regarding.kind=Deployer,regarding.name={name}")
}

/// A snapshot from what was read: only the Deployments the Deployer really owns (label and
/// controller reference), only the Events about this Deployer (not an earlier one of that name).
pub fn snapshot_of(
    namespace: &str,
    name: &str,
    deployer: Option<Deployer>,
    deployments: Vec<Deployment>,
    events: Vec<Event>,
) -> Snapshot {
    let deployments = match &deployer {
        Some(d) => deployments.into_iter().filter(|dep| is_owned_by(dep, d)).collect(),
        None => Vec::new(),
    };
    let uid = deployer.as_ref().and_then(|d| d.metadata.uid.clone());
    let events = events
        .into_iter()
        .filter(|e| {
            let regarding = e.regarding.as_ref();
            regarding.and_then(|r| r.name.as_deref()) == Some(name)
                && (uid.is_none()
                    || regarding.and_then(|r| r.uid.as_ref()).is_none_or(|u| Some(u) == uid.as_ref()))
        })
        .collect();
    Snapshot { namespace: namespace.into(), name: name.into(), deployer, deployments, events }
}

/// `obj` without `metadata.managedFields`, as kubectl prints objects.
pub fn printable(mut obj: Deployer) -> Deployer {
    obj.metadata.managed_fields = None;
    obj
}
