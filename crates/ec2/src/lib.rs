//! The `aws-ec2` provider: a node's machine is an EC2 instance tagged
//! `drover:cluster=CLUSTER` and `drover:node=NODE`.
//!
//! - describe: `DescribeInstances` (by the cluster tag) and
//!   `DescribeInstanceStatus` (instance and system checks, scheduled
//!   events). A stopped instance has no status checks at all: its state, not
//!   an "impaired" check, is what says it is gone.
//! - replace: start the node's own instance if it is stopped (the cold
//!   standby of the seed's recovery agent); else take a stopped standby
//!   (`drover:standby=true`, no node), tag it for the node and start it;
//!   else launch one from the launch template with the cluster's tags and
//!   the repair's token as `ClientToken` (a retry by a new leader launches
//!   nothing more), trying the instance types in order and setting aside
//!   for a while a type that reports insufficient capacity. What it
//!   replaced (impaired, retiring) is terminated (or stopped).
//! - resume / suspend: `StartInstances` / `StopInstances`.
//!
//! Credentials, region and endpoint come from the standard AWS chain and
//! environment (`AWS_ENDPOINT_URL` included, which the tests point at a
//! local EC2 stand-in).

pub mod floating_ip;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    Filter, Instance, InstanceStateName, InstanceType, LaunchTemplateSpecification, ResourceType, SummaryStatus, Tag,
    TagSpecification,
};
use drover_core::node::RepairKind;
use drover_healer::{Machine, MachineState, Provider, Target};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CLUSTER_TAG: &str = "drover:cluster";
pub const NODE_TAG: &str = "drover:node";
pub const STANDBY_TAG: &str = "drover:standby";

/// How long an instance type that reported insufficient capacity is set
/// aside before it is tried again.
const CAPACITY_PAUSE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The value of the `drover:cluster` tag.
    pub cluster: String,
    /// Launch replacements from this template (name or `lt-…` id).
    pub launch_template: Option<String>,
    /// Instance types to try in order (empty: the template's).
    pub instance_types: Vec<String>,
    /// Terminate what was replaced (else stop it).
    pub terminate_replaced: bool,
    /// Terminate the cluster's instances that belong to no node (no node
    /// tag, or a node the cluster does not have, and not a standby) once
    /// they have been seen so this long; `None`: never.
    pub orphan_grace: Option<Duration>,
}

pub struct Ec2 {
    client: aws_sdk_ec2::Client,
    settings: Settings,
    /// Instance types set aside after insufficient capacity, until when.
    paused: Mutex<HashMap<String, Instant>>,
    /// Instances that belong to no node, and since when they were seen so.
    orphans: Mutex<HashMap<String, Instant>>,
}

/// An SDK error as one line: the service's code and message when there is
/// one (`InsufficientInstanceCapacity: …`).
fn why<E: ProvideErrorMetadata + std::fmt::Display>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => e.to_string(),
    }
}

fn tag<'a>(i: &'a Instance, key: &str) -> Option<&'a str> {
    i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

fn state_of(i: &Instance) -> InstanceStateName {
    i.state().and_then(|s| s.name()).cloned().unwrap_or(InstanceStateName::Pending)
}

fn id_of(i: &Instance) -> String {
    i.instance_id().unwrap_or_default().to_string()
}

/// An EC2 client from the standard AWS configuration (environment,
/// profile, instance role; `AWS_ENDPOINT_URL` honoured), over rustls with
/// ring.
async fn client() -> Result<aws_sdk_ec2::Client, String> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).load().await;
    if config.region().is_none() {
        return Err("no AWS region: set AWS_REGION (or a profile's region)".into());
    }
    Ok(aws_sdk_ec2::Client::new(&config))
}

impl Ec2 {
    pub async fn new(settings: Settings) -> Result<Ec2, String> {
        if settings.cluster.is_empty() {
            return Err("the aws-ec2 provider needs --ec2-cluster (the drover:cluster tag's value)".into());
        }
        Ok(Ec2 {
            client: client().await?,
            settings,
            paused: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashMap::new()),
        })
    }

    fn cluster_filter(&self) -> Filter {
        Filter::builder().name(format!("tag:{CLUSTER_TAG}")).values(&self.settings.cluster).build()
    }

    /// Every instance of the cluster that is not terminated.
    async fn instances(&self) -> Result<Vec<Instance>, String> {
        let mut out = Vec::new();
        let mut pages = self.client.describe_instances().filters(self.cluster_filter()).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| format!("DescribeInstances: {}", why(&e)))?;
            out.extend(page.reservations().iter().flat_map(|r| r.instances().iter().cloned()));
        }
        Ok(out)
    }

    /// The node's instance: the one tagged for it that is not terminated
    /// (running first), if any.
    fn node_instance<'a>(instances: &'a [Instance], node: &str) -> Option<&'a Instance> {
        let mine = instances.iter().filter(|i| tag(i, NODE_TAG) == Some(node));
        let alive =
            |i: &&Instance| !matches!(state_of(i), InstanceStateName::Terminated | InstanceStateName::ShuttingDown);
        let mut mine: Vec<&Instance> = mine.filter(alive).collect();
        mine.sort_by_key(|i| !matches!(state_of(i), InstanceStateName::Running | InstanceStateName::Pending));
        mine.first().copied()
    }

    async fn start(&self, id: &str) -> Result<(), String> {
        self.client
            .start_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| format!("StartInstances {id}: {}", why(&e)))?;
        Ok(())
    }

    async fn retire(&self, id: &str) {
        let done = if self.settings.terminate_replaced {
            self.client.terminate_instances().instance_ids(id).send().await.map(|_| ()).map_err(|e| why(&e))
        } else {
            self.client.stop_instances().instance_ids(id).send().await.map(|_| ()).map_err(|e| why(&e))
        };
        if let Err(e) = done {
            tracing::warn!(instance = id, error = %e, "cannot retire a replaced instance");
        }
    }

    async fn replace(&self, node: &str, token: &str) -> Result<String, String> {
        let instances = self.instances().await?;
        let mut replaced = None;
        if let Some(i) = Self::node_instance(&instances, node) {
            let id = id_of(i);
            match state_of(i) {
                // The seed's way: the node's own stopped instance, started.
                InstanceStateName::Stopped | InstanceStateName::Stopping => {
                    self.start(&id).await?;
                    return Ok(format!("started {id}"));
                }
                // Launched or started by this repair already (a retry).
                InstanceStateName::Pending => return Ok(format!("{id} is starting")),
                // Running but lost (impaired, retiring, or its agent gone
                // for good): a new machine, and this one goes.
                _ => replaced = Some(id),
            }
        }
        let standby = instances.iter().find(|i| {
            tag(i, STANDBY_TAG) == Some("true")
                && tag(i, NODE_TAG).is_none()
                && state_of(i) == InstanceStateName::Stopped
        });
        let answer = if let Some(s) = standby {
            let id = id_of(s);
            self.client
                .create_tags()
                .resources(&id)
                .tags(Tag::builder().key(NODE_TAG).value(node).build())
                .send()
                .await
                .map_err(|e| format!("CreateTags {id}: {}", why(&e)))?;
            let _ = self.client.delete_tags().resources(&id).tags(Tag::builder().key(STANDBY_TAG).build()).send().await;
            self.start(&id).await?;
            format!("started standby {id}")
        } else {
            self.launch(node, token).await?
        };
        if let Some(old) = replaced {
            self.retire(&old).await;
            return Ok(format!("{answer}; retired {old}"));
        }
        Ok(answer)
    }

    /// Launches the node's replacement from the template, trying each
    /// instance type not set aside for lack of capacity.
    async fn launch(&self, node: &str, token: &str) -> Result<String, String> {
        let template = self
            .settings
            .launch_template
            .as_deref()
            .ok_or_else(|| format!("no stopped instance or standby for {node}, and no --ec2-launch-template"))?;
        let spec = if template.starts_with("lt-") {
            LaunchTemplateSpecification::builder().launch_template_id(template)
        } else {
            LaunchTemplateSpecification::builder().launch_template_name(template)
        }
        .version("$Latest")
        .build();
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .tags(Tag::builder().key(CLUSTER_TAG).value(&self.settings.cluster).build())
            .tags(Tag::builder().key(NODE_TAG).value(node).build())
            .build();
        let types: Vec<Option<&str>> = if self.settings.instance_types.is_empty() {
            vec![None]
        } else {
            self.settings.instance_types.iter().map(|t| Some(t.as_str())).collect()
        };
        let mut errors = Vec::new();
        for (k, ty) in types.iter().enumerate() {
            if let Some(t) = ty {
                let until = self.paused.lock().expect("paused lock").get(*t).copied();
                if until.is_some_and(|u| Instant::now() < u) {
                    errors.push(format!("{t}: set aside after insufficient capacity"));
                    continue;
                }
            }
            // One token per type: the same retry of the same type is one
            // launch, another type is another request.
            let mut req = self
                .client
                .run_instances()
                .launch_template(spec.clone())
                .min_count(1)
                .max_count(1)
                .client_token(if k == 0 { token.to_string() } else { format!("{}-{k}", &token[..token.len().min(60)]) })
                .tag_specifications(tags.clone());
            if let Some(t) = ty {
                req = req.instance_type(InstanceType::from(*t));
            }
            match req.send().await {
                Ok(out) => {
                    let id = out.instances().first().map(id_of).unwrap_or_default();
                    return Ok(format!("launched {id}{}", ty.map(|t| format!(" ({t})")).unwrap_or_default()));
                }
                Err(e) => {
                    let text = why(&e);
                    if e.code().is_some_and(|c| c == "InsufficientInstanceCapacity" || c == "InsufficientCapacity") {
                        if let Some(t) = ty {
                            tracing::warn!(
                                instance_type = t,
                                "insufficient capacity: set aside for {}s",
                                CAPACITY_PAUSE.as_secs()
                            );
                            self.paused
                                .lock()
                                .expect("paused lock")
                                .insert(t.to_string(), Instant::now() + CAPACITY_PAUSE);
                        }
                        errors.push(format!("{}: {text}", ty.unwrap_or("the template's type")));
                        continue;
                    }
                    return Err(format!("RunInstances: {text}"));
                }
            }
        }
        Err(format!("no instance could be launched for {node}: {}", errors.join("; ")))
    }

    /// Terminates the cluster's instances that belong to no node once
    /// they have been seen so for the grace period: a launch whose node was
    /// removed, a node tag mistyped, a second instance of one node.
    async fn reap_orphans(&self, instances: &[Instance], nodes: &[String]) {
        let Some(grace) = self.settings.orphan_grace else { return };
        let alive =
            |i: &Instance| !matches!(state_of(i), InstanceStateName::Terminated | InstanceStateName::ShuttingDown);
        let chosen: Vec<String> = nodes.iter().filter_map(|n| Self::node_instance(instances, n)).map(id_of).collect();
        let orphan = |i: &Instance| {
            if tag(i, STANDBY_TAG) == Some("true") && tag(i, NODE_TAG).is_none() {
                return false;
            }
            match tag(i, NODE_TAG) {
                None => true,
                Some(n) if !nodes.iter().any(|x| x == n) => true,
                // A node's extra instance, running beside the one it uses.
                Some(_) => {
                    !chosen.contains(&id_of(i))
                        && matches!(state_of(i), InstanceStateName::Running | InstanceStateName::Pending)
                }
            }
        };
        let now = Instant::now();
        let due: Vec<String> = {
            let mut seen = self.orphans.lock().expect("orphans lock");
            let current: Vec<String> = instances.iter().filter(|i| alive(i) && orphan(i)).map(id_of).collect();
            seen.retain(|id, _| current.contains(id));
            for id in &current {
                seen.entry(id.clone()).or_insert(now);
            }
            seen.iter().filter(|(_, since)| now.duration_since(**since) >= grace).map(|(id, _)| id.clone()).collect()
        };
        for id in due {
            match self.client.terminate_instances().instance_ids(&id).send().await {
                Ok(_) => {
                    tracing::warn!(instance = %id, "terminated an instance of the cluster that belongs to no node");
                    self.orphans.lock().expect("orphans lock").remove(&id);
                }
                Err(e) => tracing::warn!(instance = %id, error = %why(&e), "cannot terminate an orphan instance"),
            }
        }
    }

    async fn power(&self, node: &str, on: bool) -> Result<String, String> {
        let instances = self.instances().await?;
        let i = Self::node_instance(&instances, node).ok_or_else(|| format!("no instance is tagged for {node}"))?;
        let id = id_of(i);
        if on {
            self.start(&id).await?;
            Ok(format!("started {id}"))
        } else {
            self.client
                .stop_instances()
                .instance_ids(&id)
                .send()
                .await
                .map_err(|e| format!("StopInstances {id}: {}", why(&e)))?;
            Ok(format!("stopped {id}"))
        }
    }
}

impl Provider for Ec2 {
    fn name(&self) -> &'static str {
        "aws-ec2"
    }

    fn describe<'a>(&'a self, nodes: &'a [String]) -> BoxFuture<'a, Result<Vec<Machine>, String>> {
        Box::pin(async move {
            let instances = self.instances().await?;
            self.reap_orphans(&instances, nodes).await;
            let mut out = Vec::new();
            let mut running = Vec::new();
            for node in nodes {
                let Some(i) = Self::node_instance(&instances, node) else {
                    // Tagged instances that all terminated: gone. None ever
                    // tagged: missing (confirmed over two listings).
                    let gone = instances.iter().any(|i| tag(i, NODE_TAG) == Some(node.as_str()));
                    let state = if gone { MachineState::Terminated } else { MachineState::Missing };
                    out.push(Machine { node: node.clone(), state, id: String::new() });
                    continue;
                };
                let state = match state_of(i) {
                    InstanceStateName::Pending => MachineState::Booting,
                    InstanceStateName::Running => {
                        running.push(id_of(i));
                        MachineState::Running
                    }
                    InstanceStateName::Stopping | InstanceStateName::Stopped => MachineState::Stopped,
                    _ => MachineState::Terminated,
                };
                out.push(Machine { node: node.clone(), state, id: id_of(i) });
            }
            // Status checks and scheduled events, for the running ones.
            if !running.is_empty() {
                let mut pages = self
                    .client
                    .describe_instance_status()
                    .set_instance_ids(Some(running))
                    .include_all_instances(true)
                    .into_paginator()
                    .send();
                let mut health: HashMap<String, MachineState> = HashMap::new();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| format!("DescribeInstanceStatus: {}", why(&e)))?;
                    for s in page.instance_statuses() {
                        let bad = |x: Option<&aws_sdk_ec2::types::InstanceStatusSummary>| {
                            x.and_then(|x| x.status()).is_some_and(|st| *st == SummaryStatus::Impaired)
                        };
                        let id = s.instance_id().unwrap_or_default().to_string();
                        if bad(s.instance_status()) || bad(s.system_status()) {
                            health.insert(id, MachineState::Impaired);
                        } else if s
                            .events()
                            .iter()
                            .any(|e| !e.description().unwrap_or_default().starts_with("[Completed]"))
                        {
                            health.insert(id, MachineState::Retiring);
                        }
                    }
                }
                for m in &mut out {
                    if let Some(h) = health.get(&m.id) {
                        m.state = *h;
                    }
                }
            }
            Ok(out)
        })
    }

    fn act<'a>(
        &'a self,
        kind: RepairKind,
        targets: &'a [Target],
        _waiting: &'a serde_json::Value,
    ) -> BoxFuture<'a, Vec<Result<String, String>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for t in targets {
                out.push(match kind {
                    RepairKind::Replace => self.replace(&t.node, &t.token).await,
                    RepairKind::Resume => self.power(&t.node, true).await,
                    RepairKind::Suspend => self.power(&t.node, false).await,
                });
            }
            out
        })
    }
}
