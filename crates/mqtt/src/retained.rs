//! Retained messages, kept in the sled tree `retained` so they survive a
//! restart (rumqttd holds them in memory only). perch sees every retained
//! PUBLISH in its front end and records it here; at start it publishes them
//! back into the router with the retain flag.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RetainedMessage {
    pub topic: String,
    #[serde(with = "serde_bytes_b64")]
    pub payload: Vec<u8>,
    pub qos: u8,
    pub time_ms: i64,
}

mod serde_bytes_b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

pub struct RetainedStore {
    tree: sled::Tree,
}

impl RetainedStore {
    pub fn open(trees: &store::Trees) -> Result<RetainedStore, store::StorageError> {
        Ok(RetainedStore {
            tree: trees.open(store::Tree::Retained)?,
        })
    }

    /// Records a retained publish; an empty payload clears the topic, as MQTT says.
    pub fn record(&self, topic: &str, payload: &Bytes, qos: u8, time_ms: i64) -> sled::Result<()> {
        if payload.is_empty() {
            self.tree.remove(topic)?;
        } else {
            let m = RetainedMessage {
                topic: topic.to_string(),
                payload: payload.to_vec(),
                qos,
                time_ms,
            };
            self.tree
                .insert(topic, serde_json::to_vec(&m).expect("serializable"))?;
        }
        Ok(())
    }

    pub fn all(&self) -> Vec<RetainedMessage> {
        self.tree
            .iter()
            .filter_map(|r| r.ok())
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn flush(&self) -> sled::Result<()> {
        self.tree.flush().map(|_| ())
    }
}
