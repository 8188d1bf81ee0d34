//! A throw-away cluster of `nats-server`s with clustered JetStream, on 127.0.0.1.
//!
//! Every node is a [`NatsServer`] with its own store dir, client port, cluster (route) port and
//! monitoring port; each one routes to all the others. [`NatsCluster::start`] returns once the
//! nodes agree on a JetStream meta leader, so streams with replicas can be created right away.
//! Leaders are read from the monitoring endpoint `/jsz` of the nodes themselves: a node is the
//! leader when it says so, which avoids trusting a follower's stale view just after a kill.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Result, TestkitError};
use crate::nats::{NatsServer, NatsServerBuilder, is_bind_error, quote};
use crate::util::{self, PORT_ATTEMPTS};

/// Options for starting a [`NatsCluster`]; get one from [`NatsCluster::builder`].
#[derive(Debug, Clone)]
pub struct NatsClusterBuilder {
    /// Number of nodes.
    size: usize,
    /// Options every node starts from (port, name, store dir and monitoring are set per node).
    node: NatsServerBuilder,
    /// How long to wait for a meta leader or a stream leader.
    leader_timeout: Duration,
}

impl Default for NatsClusterBuilder {
    fn default() -> Self {
        Self {
            size: 3,
            node: NatsServerBuilder::default(),
            leader_timeout: Duration::from_secs(60),
        }
    }
}

impl NatsClusterBuilder {
    /// Number of nodes: at least 2, 3 by default (JetStream needs a majority of them up, and
    /// a lone clustered node never elects a meta leader).
    pub fn size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }

    /// Appends configuration text to every node's config file (see
    /// [`NatsServerBuilder::extra_config`]).
    pub fn extra_config(mut self, text: impl Into<String>) -> Self {
        self.node = self.node.extra_config(text);
        self
    }

    /// Whether every node fsyncs every JetStream write (`sync_interval: always`); on by default.
    pub fn sync_always(mut self, always: bool) -> Self {
        self.node = self.node.sync_always(always);
        self
    }

    /// How long each node may take to accept connections.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.node = self.node.startup_timeout(timeout);
        self
    }

    /// How long the `wait_for_*` methods (and the start) wait for a leader; 60 s by default,
    /// generous for elections on a loaded machine.
    pub fn leader_timeout(mut self, timeout: Duration) -> Self {
        self.leader_timeout = timeout;
        self
    }

    /// Runs this binary instead of the discovered one.
    pub fn binary(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.node = self.node.binary(path);
        self
    }

    /// Starts every node and waits until they agree on a JetStream meta leader. Retries with
    /// fresh ports when one of them was taken meanwhile.
    pub async fn start(self) -> Result<NatsCluster> {
        if self.size < 2 {
            return Err(TestkitError::InvalidConfig(format!(
                "a nats cluster needs at least 2 nodes, not {}",
                self.size
            )));
        }
        let name = util::unique_name("talkwai_cluster");
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match self.try_start(&name).await {
                Ok(cluster) => {
                    cluster.wait_for_meta_leader().await?;
                    return Ok(cluster);
                }
                Err(err @ TestkitError::PortCollision { .. }) => last = err.to_string(),
                Err(err @ TestkitError::ExitedEarly { .. }) if is_bind_error(&err) => {
                    last = err.to_string();
                }
                Err(err) => return Err(err),
            }
            tracing::debug!(cluster = %name, "nats cluster port collision, retrying");
        }
        Err(TestkitError::PortCollision {
            program: "nats-server cluster",
            attempts: PORT_ATTEMPTS,
            last,
        })
    }

    async fn try_start(&self, name: &str) -> Result<NatsCluster> {
        let client_ports = (0..self.size)
            .map(|_| util::free_port())
            .collect::<Result<Vec<_>>>()?;
        let route_ports = (0..self.size)
            .map(|_| util::free_port())
            .collect::<Result<Vec<_>>>()?;
        let routes = route_ports
            .iter()
            .map(|port| quote(&format!("nats-route://127.0.0.1:{port}")))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::with_capacity(self.size);
        for (index, (client, route)) in client_ports.iter().zip(&route_ports).enumerate() {
            let cluster_block = format!(
                "cluster {{\n  name: {name}\n  listen: \"127.0.0.1:{route}\"\n  routes: [{routes}]\n}}",
                name = quote(name),
            );
            let node = self
                .node
                .clone()
                .port(*client)
                .monitoring(true)
                .server_name(format!("{name}_n{index}"))
                .extra_config(cluster_block)
                .start()
                .await?;
            nodes.push(node);
        }
        Ok(NatsCluster {
            name: name.to_owned(),
            nodes,
            leader_timeout: self.leader_timeout,
        })
    }
}

/// A running cluster of `nats-server`s with clustered JetStream on 127.0.0.1.
///
/// Dropping it kills every node and deletes their temp dirs. [`kill`](Self::kill) and
/// [`restart`](Self::restart) act on one node and keep its ports and store.
#[derive(Debug)]
pub struct NatsCluster {
    /// The cluster name (unique per instance).
    name: String,
    /// The nodes, by index.
    nodes: Vec<NatsServer>,
    /// Deadline of the `wait_for_*` methods.
    leader_timeout: Duration,
}

impl NatsCluster {
    /// Options for a cluster; `NatsCluster::builder().start()` equals [`NatsCluster::start`].
    pub fn builder() -> NatsClusterBuilder {
        NatsClusterBuilder::default()
    }

    /// Starts a 3-node cluster with default options.
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least two nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes, by index.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// The client URL of every node, by index.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The client URLs joined with commas: the form `TALKWAI_NATS_URL` takes.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// The index of the node named `server_name`.
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|node| node.server_name() == server_name)
    }

    /// Kills node `index` with SIGKILL and waits for it to exit.
    pub async fn kill(&mut self, index: usize) -> Result<()> {
        self.node_mut(index)?.kill().await
    }

    /// Starts node `index` again on its ports and store (after [`kill`](Self::kill), or
    /// stopping it gracefully first when it runs) and waits until it accepts connections.
    pub async fn restart(&mut self, index: usize) -> Result<()> {
        self.node_mut(index)?.restart().await
    }

    /// Whether node `index` is running.
    pub fn is_running(&mut self, index: usize) -> bool {
        self.nodes
            .get_mut(index)
            .is_some_and(NatsServer::is_running)
    }

    fn node_mut(&mut self, index: usize) -> Result<&mut NatsServer> {
        let len = self.nodes.len();
        self.nodes.get_mut(index).ok_or_else(|| {
            TestkitError::InvalidConfig(format!("no node {index} in a cluster of {len}"))
        })
    }

    /// `/jsz` of every node that answers, by index.
    async fn jsz(&self, query: &str) -> Vec<(usize, Value)> {
        let mut answers = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if let Some(body) = node.monitoring_get(&format!("/jsz{query}")).await
                && let Ok(value) = serde_json::from_str::<Value>(&body)
            {
                answers.push((index, value));
            }
        }
        answers
    }

    /// The node every answering node names as JetStream meta leader, when they agree and the
    /// leader itself answers; `None` during an election.
    pub async fn meta_leader(&self) -> Option<usize> {
        self.meta_view().await.0
    }

    async fn meta_view(&self) -> (Option<usize>, String) {
        let answers = self.jsz("").await;
        let leaders: Vec<(usize, String)> = answers
            .iter()
            .map(|(index, jsz)| {
                let leader = jsz
                    .pointer("/meta_cluster/leader")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                (*index, leader.to_owned())
            })
            .collect();
        let detail = format!("{leaders:?}");
        let Some((_, first)) = leaders.first() else {
            return (None, detail);
        };
        if first.is_empty() || leaders.iter().any(|(_, leader)| leader != first) {
            return (None, detail);
        }
        let Some(leader) = self.index_of(first) else {
            return (None, detail);
        };
        let leader_answered = leaders.iter().any(|(index, _)| *index == leader);
        (leader_answered.then_some(leader), detail)
    }

    /// Waits until the running nodes agree on a JetStream meta leader; returns its index.
    pub async fn wait_for_meta_leader(&self) -> Result<usize> {
        let deadline = Instant::now() + self.leader_timeout;
        loop {
            let (leader, detail) = self.meta_view().await;
            if let Some(leader) = leader {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::ClusterNotReady {
                    what: "jetstream meta leader".into(),
                    timeout: self.leader_timeout,
                    detail,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The stream's cluster info (`/jsz` `stream_detail[].cluster`) as node `index` sees it.
    async fn stream_views(&self, stream: &str) -> Vec<(usize, Value)> {
        self.jsz("?accounts=true&streams=true")
            .await
            .into_iter()
            .filter_map(|(index, jsz)| {
                let accounts = jsz.get("account_details")?.as_array()?;
                let cluster = accounts.iter().find_map(|account| {
                    account
                        .get("stream_detail")?
                        .as_array()?
                        .iter()
                        .find(|s| s.get("name").and_then(Value::as_str) == Some(stream))?
                        .get("cluster")
                        .cloned()
                })?;
                Some((index, cluster))
            })
            .collect()
    }

    /// The node that leads `stream` (it says so itself), or `None` during an election or when
    /// the stream does not exist.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        self.stream_leader_view(stream).await.0
    }

    async fn stream_leader_view(&self, stream: &str) -> (Option<usize>, String) {
        let views = self.stream_views(stream).await;
        let detail = format!("{views:?}");
        let leader = views.iter().find_map(|(index, cluster)| {
            let leader = cluster.get("leader").and_then(Value::as_str)?;
            (self.nodes.get(*index)?.server_name() == leader).then_some(*index)
        });
        (leader, detail)
    }

    /// Waits until a node leads `stream`; returns its index.
    pub async fn wait_for_stream_leader(&self, stream: &str) -> Result<usize> {
        let deadline = Instant::now() + self.leader_timeout;
        loop {
            let (leader, detail) = self.stream_leader_view(stream).await;
            if let Some(leader) = leader {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::ClusterNotReady {
                    what: format!("leader of stream {stream}"),
                    timeout: self.leader_timeout,
                    detail,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `stream` has a leader that reports `replicas - 1` followers, all current
    /// (caught up), e.g. after a restarted node rejoined; returns the leader's index.
    pub async fn wait_for_stream_current(&self, stream: &str, replicas: usize) -> Result<usize> {
        let deadline = Instant::now() + self.leader_timeout;
        loop {
            let views = self.stream_views(stream).await;
            let current = views.iter().find_map(|(index, cluster)| {
                let leader = cluster.get("leader").and_then(Value::as_str)?;
                if self.nodes.get(*index)?.server_name() != leader {
                    return None;
                }
                let followers = cluster.get("replicas")?.as_array()?;
                let all_current = followers.len() + 1 == replicas
                    && followers
                        .iter()
                        .all(|r| r.get("current").and_then(Value::as_bool) == Some(true));
                all_current.then_some(*index)
            });
            if let Some(leader) = current {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::ClusterNotReady {
                    what: format!("{replicas} current replicas of stream {stream}"),
                    timeout: self.leader_timeout,
                    detail: format!("{views:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
