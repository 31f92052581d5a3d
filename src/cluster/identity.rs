//! One node per id. The node id is also the machine id inside every id a node generates, so
//! two live nodes with one id could mint the same purchase id. Each node answers on its id's
//! subject for as long as it lives; a starting node asks there first and refuses to start
//! when anyone else answers. A node that dies stops answering when its connection closes.

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::bus::{Bus, BusError};
use super::roles::Roles;

/// How long a starting node listens for another holder of its id.
const LISTEN_FOR: Duration = Duration::from_millis(400);

/// What a node says when asked who holds its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    /// Tells our own answer apart from another node's.
    nonce: u64,
    roles: String,
    pid: u32,
}

/// Claims the node id for this process: starts answering on the id's subject, then asks
/// whether anyone else does. Refuses with the other holder's description when one answers.
/// Two nodes starting together both see each other and both refuse, which is safe.
pub async fn claim_node_id(bus: &Bus, roles: Roles) -> anyhow::Result<()> {
    let subject = bus.node_subject(bus.node_id);
    let me = Holder {
        nonce: rand::random(),
        roles: roles.to_string(),
        pid: std::process::id(),
    };
    let answer = serde_json::to_vec(&me)?;
    let mut asked = bus.subscribe(subject.clone(), None).await?;
    let client = bus.client.clone();
    actix_rt::spawn(async move {
        while let Some(question) = asked.next().await {
            if let Some(reply) = question.reply {
                let _ = client.publish(reply, answer.clone().into()).await;
            }
        }
    });

    let inbox = bus.client.new_inbox();
    let mut answers = bus.subscribe(inbox.clone(), None).await?;
    bus.client
        .publish_with_reply(subject, inbox, "who".into())
        .await
        .map_err(|e| BusError::Nats(e.to_string()))?;
    let deadline = tokio::time::sleep(LISTEN_FOR);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok(()),
            answer = answers.next() => {
                let Some(answer) = answer else { return Ok(()) };
                let Ok(other) = serde_json::from_slice::<Holder>(&answer.payload) else { continue };
                if other.nonce != me.nonce {
                    anyhow::bail!(
                        "node id {} is in use by another live node (pid {}, roles {}); \
                         give every node its own --node-id",
                        bus.node_id, other.pid, other.roles
                    );
                }
            }
        }
    }
}
