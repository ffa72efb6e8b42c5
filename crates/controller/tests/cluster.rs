//! Quorum nodes as the broker will run them, over TCP on loopback: three voters elect an active
//! controller; brokers register and heartbeat through any node; topics are placed across
//! them; the active controller is killed and requests carried on by the next one; a broker that
//! stops heartbeating is fenced and its partitions lose their leader; a broker-only node joins as
//! an observer by a bootstrap address; the killed voter restarts from its files and catches up;
//! AlterPartition travels the controller listener and is committed before it is answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use uuid::Uuid;
use vltava_controller::controller::{
    AlterPartitionData, AlterPartitionRequest, AlterPartitionTopic, BrokerHeartbeatRequest,
    BrokerRegistrationRequest, ControllerConfig, CreateTopicRequest, IsrMember, LEADER_RECOVERED,
};
use vltava_controller::node::{ControllerClient, NodeConfig, QuorumNode, QuorumTiming};
use vltava_controller::records::{BrokerEndpoint, NO_LEADER};
use vltava_controller::rpc::{ControllerRequest, ControllerResponse};

const CLUSTER: &str = "cluster-test-1";
const TIMEOUT: Duration = Duration::from_secs(20);

fn timing() -> QuorumTiming {
    QuorumTiming {
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
    }
}

fn controller_config() -> ControllerConfig {
    ControllerConfig {
        session_timeout_ms: 1500,
        ..ControllerConfig::default()
    }
}

fn config(
    id: i32,
    dir: &std::path::Path,
    voters: &BTreeMap<i32, String>,
    addr: String,
    controller_role: bool,
    bootstrap: Vec<String>,
) -> NodeConfig {
    NodeConfig {
        node_id: id,
        data_dir: dir.join(format!("node-{id}")),
        cluster_id: CLUSTER.into(),
        controller_role,
        voters: voters.clone(),
        bootstrap_servers: bootstrap,
        advertised_addr: addr,
        controller: controller_config(),
        timing: timing(),
        bootstrap_records: Vec::new(),
    }
}

async fn wait_for_leader(nodes: &BTreeMap<i32, QuorumNode>) -> i32 {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let leaders: Vec<Option<i32>> = nodes.values().map(|n| n.leader_id()).collect();
        if let Some(Some(l)) = leaders.first()
            && leaders.iter().all(|x| *x == Some(*l))
            && nodes.contains_key(l)
        {
            return *l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn register(client: &ControllerClient, id: i32) -> i64 {
    let (_, response) = client
        .call(
            ControllerRequest::RegisterBroker(BrokerRegistrationRequest {
                broker_id: id,
                incarnation_id: Uuid::from_u128(id as u128),
                listeners: vec![BrokerEndpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9000 + id as u16,
                    security_protocol: 0,
                }],
                rack: None,
            }),
            TIMEOUT,
        )
        .await
        .expect("registration");
    match response {
        ControllerResponse::Registered { broker_epoch } => broker_epoch,
        other => panic!("unexpected {other:?}"),
    }
}

/// Heartbeats for broker `id` through `node` every 200 ms until `stop`.
fn heartbeat_loop(
    node: &QuorumNode,
    id: i32,
    epoch: i64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let client = node.client(Vec::new());
    let applied = node.applied();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let offset = applied.borrow().map_or(-1, |o| o as i64);
            let _ = client
                .call(
                    ControllerRequest::BrokerHeartbeat(BrokerHeartbeatRequest {
                        broker_id: id,
                        broker_epoch: epoch,
                        current_metadata_offset: offset,
                        want_fence: false,
                        want_shutdown: false,
                    }),
                    Duration::from_secs(5),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn create(name: &str, partitions: i32, rf: i16) -> ControllerRequest {
    ControllerRequest::CreateTopics {
        topics: vec![CreateTopicRequest {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: rf,
            ..CreateTopicRequest::default()
        }],
        validate_only: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_serve_brokers_through_failover_and_an_observer_joins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut listeners = BTreeMap::new();
    let mut voters = BTreeMap::new();
    for id in 1..=3 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        voters.insert(id, l.local_addr().expect("addr").to_string());
        listeners.insert(id, l);
    }
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        let cfg = config(
            id,
            dir.path(),
            &voters,
            voters[&id].clone(),
            true,
            Vec::new(),
        );
        nodes.insert(id, QuorumNode::start(cfg, Some(l)).await.expect("start"));
    }
    let leader = wait_for_leader(&nodes).await;

    // Every broker registers and heartbeats through its own node, whoever leads.
    let stop = Arc::new(AtomicBool::new(false));
    let mut beats = BTreeMap::new();
    for id in 1..=3 {
        let epoch = register(&nodes[&id].client(Vec::new()), id).await;
        beats.insert(id, (epoch, Arc::new(AtomicBool::new(false))));
        let (epoch, own_stop) = &beats[&id];
        heartbeat_loop(&nodes[&id], id, *epoch, Arc::clone(own_stop));
    }
    let image = nodes[&1].image();
    wait_until("every broker unfenced", || {
        image
            .read(|img, _| img.brokers.values().filter(|b| !b.fenced).count() == 3)
            .unwrap_or(false)
    })
    .await;

    // 12 partitions on 3 brokers: 4 leaders each, the same on every node once applied.
    let client = nodes[&2].client(Vec::new());
    let (offset, response) = client
        .call(create("t", 12, 1), TIMEOUT)
        .await
        .expect("create");
    let offset = offset.expect("written");
    match response {
        ControllerResponse::CreateTopics(r) => assert!(r[0].1.is_ok(), "{r:?}"),
        other => panic!("unexpected {other:?}"),
    }
    for n in nodes.values() {
        assert!(n.wait_applied(offset, TIMEOUT).await);
    }
    let mut per_broker = BTreeMap::new();
    image
        .read(|img, _| {
            let t = img.topic_by_name("t").expect("topic");
            for p in t.partitions.values() {
                *per_broker.entry(p.leader).or_insert(0) += 1;
            }
        })
        .expect("read");
    assert_eq!(per_broker, BTreeMap::from([(1, 4), (2, 4), (3, 4)]));
    let images: Vec<_> = nodes
        .values()
        .map(|n| {
            n.image()
                .read(|img, _| img.topic_by_name("t").cloned())
                .expect("read")
        })
        .collect();
    assert!(images.windows(2).all(|w| w[0] == w[1]));

    // Replication is for later: RF 3 is refused, with Kafka's code.
    let err = match client.call(create("r3", 1, 3), TIMEOUT).await {
        Ok((_, ControllerResponse::CreateTopics(r))) => r[0].1.clone().expect_err("rf 3"),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(err.code(), 38);

    let pid_a = match client
        .call(
            ControllerRequest::AllocateProducerIds {
                broker_id: 2,
                broker_epoch: beats[&2].0,
            },
            TIMEOUT,
        )
        .await
        .expect("pids")
    {
        (_, ControllerResponse::ProducerIds(b)) => b,
        other => panic!("unexpected {other:?}"),
    };

    // Kill the active controller (its broker goes with it).
    beats[&leader].1.store(true, Ordering::Relaxed);
    let killed = nodes.remove(&leader).expect("leader node");
    let killed_at = tokio::time::Instant::now();
    killed.shutdown().await;
    let survivor = *nodes.keys().next().expect("a survivor");
    let client = nodes[&survivor].client(Vec::new());
    let (offset, response) = client
        .call(create("after-failover", 2, 1), TIMEOUT)
        .await
        .expect("create after failover");
    match response {
        ControllerResponse::CreateTopics(r) => assert!(r[0].1.is_ok(), "{r:?}"),
        other => panic!("unexpected {other:?}"),
    }
    eprintln!(
        "failover: CreateTopics succeeded {:?} after the kill",
        killed_at.elapsed()
    );
    let new_leader = wait_for_leader(&nodes).await;
    assert_ne!(new_leader, leader);
    let pid_b = match client
        .call(
            ControllerRequest::AllocateProducerIds {
                broker_id: survivor,
                broker_epoch: beats[&survivor].0,
            },
            TIMEOUT,
        )
        .await
        .expect("pids")
    {
        (_, ControllerResponse::ProducerIds(b)) => b,
        other => panic!("unexpected {other:?}"),
    };
    assert!(
        pid_b.first >= pid_a.first + pid_a.size,
        "{pid_a:?} {pid_b:?}"
    );

    // The killed broker is fenced after its session and its partitions have no leader.
    let image = nodes[&survivor].image();
    assert!(
        nodes[&survivor]
            .wait_applied(offset.expect("written"), TIMEOUT)
            .await
    );
    wait_until("the killed broker fenced", || {
        image
            .read(|img, _| img.brokers[&leader].fenced)
            .unwrap_or(false)
    })
    .await;
    image
        .read(|img, _| {
            let t = img.topic_by_name("t").expect("topic");
            for p in t.partitions.values() {
                if p.replicas == vec![leader] {
                    assert_eq!(p.leader, NO_LEADER);
                } else {
                    assert_ne!(p.leader, NO_LEADER);
                }
            }
        })
        .expect("read");

    // A broker-only node joins by a bootstrap address and follows the log.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let bootstrap = vec![voters[&survivor].clone()];
    let observer = QuorumNode::start(
        config(4, dir.path(), &BTreeMap::new(), addr, false, bootstrap),
        Some(l),
    )
    .await
    .expect("observer joins");
    let observer_image = observer.image();
    wait_until("the observer has the topics", || {
        observer_image
            .read(|img, _| img.topic_by_name("after-failover").is_some())
            .unwrap_or(false)
    })
    .await;
    let (_, quorum) = client
        .call(ControllerRequest::DescribeQuorum, TIMEOUT)
        .await
        .expect("describe quorum");
    match quorum {
        ControllerResponse::Quorum(q) => {
            assert_eq!(q.cluster_id, CLUSTER);
            assert_eq!(q.leader_id, new_leader);
            assert_eq!(q.voters.len(), 3);
            assert_eq!(
                q.observers.iter().map(|o| o.node_id).collect::<Vec<_>>(),
                vec![4]
            );
        }
        other => panic!("unexpected {other:?}"),
    }

    // The killed voter restarts from its files and catches up.
    let l = TcpListener::bind(voters[&leader].as_str())
        .await
        .expect("rebind");
    let restarted = QuorumNode::start(
        config(
            leader,
            dir.path(),
            &voters,
            voters[&leader].clone(),
            true,
            Vec::new(),
        ),
        Some(l),
    )
    .await
    .expect("restart");
    let restarted_image = restarted.image();
    wait_until("the restarted voter caught up", || {
        restarted_image
            .read(|img, _| img.topic_by_name("after-failover").is_some())
            .unwrap_or(false)
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for (_, s) in beats.values() {
        s.store(true, Ordering::Relaxed);
    }
    observer.shutdown().await;
    restarted.shutdown().await;
    for (_, n) in nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_lone_node_needs_no_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let voters = BTreeMap::from([(1, String::new())]);
    let node = QuorumNode::start(
        config(1, dir.path(), &voters, String::new(), true, Vec::new()),
        None,
    )
    .await
    .expect("start");
    let client = node.client(Vec::new());
    let epoch = register(&client, 1).await;
    assert!(epoch >= 0);
    node.shutdown().await;
    // Restart: the registration is still there.
    let node = QuorumNode::start(
        config(1, dir.path(), &voters, String::new(), true, Vec::new()),
        None,
    )
    .await
    .expect("restart");
    let image = node.image();
    wait_until("state restored", || {
        image
            .read(|img, _| img.brokers.contains_key(&1))
            .unwrap_or(false)
    })
    .await;
    node.shutdown().await;
}

/// AlterPartition from a client outside the node (the codec both ways, over TCP): a shrink is
/// committed before the answer, which names the offset; a no-op names none; a stale requester
/// fails as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_partition_over_the_controller_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let voters = BTreeMap::from([(1, addr.clone())]);
    let mut cfg = config(1, dir.path(), &voters, addr.clone(), true, Vec::new());
    cfg.controller.max_replication_factor = None;
    // No heartbeat loops here: the brokers must stay unfenced for the whole test.
    cfg.controller.session_timeout_ms = 120_000;
    let mut nodes = BTreeMap::from([(1, QuorumNode::start(cfg, Some(l)).await.expect("start"))]);
    wait_for_leader(&nodes).await;
    let node = nodes.remove(&1).expect("node");
    let client = ControllerClient::remote(CLUSTER.into(), 99, vec![addr]);

    let mut epochs = BTreeMap::new();
    for id in 1..=3 {
        let epoch = register(&client, id).await;
        assert!(node.wait_applied(epoch as u64, TIMEOUT).await);
        let offset = node.applied().borrow().map_or(-1, |o| o as i64);
        let (_, response) = client
            .call(
                ControllerRequest::BrokerHeartbeat(BrokerHeartbeatRequest {
                    broker_id: id,
                    broker_epoch: epoch,
                    current_metadata_offset: offset,
                    want_fence: false,
                    want_shutdown: false,
                }),
                TIMEOUT,
            )
            .await
            .expect("heartbeat");
        assert!(
            matches!(response, ControllerResponse::Heartbeat(h) if !h.is_fenced),
            "{response:?}"
        );
        epochs.insert(id, epoch);
    }
    let (offset, _) = client
        .call(create("t", 1, 3), TIMEOUT)
        .await
        .expect("create");
    assert!(node.wait_applied(offset.expect("written"), TIMEOUT).await);
    let image = node.image();
    let (topic_id, p) = image
        .read(|img, _| {
            let t = img.topic_by_name("t").expect("topic");
            (t.id, t.partitions[&0].clone())
        })
        .expect("read");
    assert_eq!(p.isr.len(), 3);
    let shrunk: Vec<i32> = p.isr.iter().copied().take(2).collect();
    let shrunk = if shrunk.contains(&p.leader) {
        shrunk
    } else {
        vec![p.leader, shrunk[0]]
    };
    let request = |broker_epoch: i64, isr: &[i32], partition_epoch: i32| {
        ControllerRequest::AlterPartition(AlterPartitionRequest {
            broker_id: p.leader,
            broker_epoch,
            topics: vec![AlterPartitionTopic {
                topic_id,
                partitions: vec![AlterPartitionData {
                    partition_index: 0,
                    leader_epoch: p.leader_epoch,
                    new_isr_with_epochs: isr
                        .iter()
                        .map(|b| IsrMember {
                            broker_id: *b,
                            broker_epoch: epochs[b],
                        })
                        .collect(),
                    leader_recovery_state: LEADER_RECOVERED,
                    partition_epoch,
                }],
            }],
        })
    };
    let leader_epoch = epochs[&p.leader];

    let (offset, response) = client
        .call(request(leader_epoch, &shrunk, p.partition_epoch), TIMEOUT)
        .await
        .expect("shrink");
    let altered = match response {
        ControllerResponse::AlterPartition(mut topics) => {
            assert_eq!(topics.len(), 1);
            assert_eq!(topics[0].topic_id, topic_id);
            topics[0].partitions.remove(0).1.expect("altered")
        }
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(altered.isr, shrunk);
    assert_eq!(altered.leader_id, p.leader);
    assert_eq!(altered.leader_epoch, p.leader_epoch);
    assert_eq!(altered.partition_epoch, p.partition_epoch + 1);
    // The answer came after the commit: the node has the change at the offset it names.
    assert!(node.wait_applied(offset.expect("written"), TIMEOUT).await);
    let now = image
        .read(|img, _| img.topics[&topic_id].partitions[&0].clone())
        .expect("read");
    assert_eq!(now.isr, shrunk);
    assert_eq!(now.partition_epoch, altered.partition_epoch);

    // The same proposal again, on the new epoch: nothing to write.
    let (offset, response) = client
        .call(request(leader_epoch, &shrunk, now.partition_epoch), TIMEOUT)
        .await
        .expect("no-op");
    assert_eq!(offset, None);
    assert!(matches!(response, ControllerResponse::AlterPartition(_)));

    let err = client
        .call(
            request(leader_epoch + 1, &shrunk, now.partition_epoch),
            TIMEOUT,
        )
        .await
        .expect_err("stale broker epoch");
    assert_eq!(err.code(), 77, "STALE_BROKER_EPOCH");
    node.shutdown().await;
}
