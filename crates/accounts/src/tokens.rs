//! API tokens for Grafana, Telegraf and scripts. The secret
//! (`perch_<id>_<random>`) is shown once; only its SHA-256 is kept — it has
//! 128 random bits, so a slow password hash would add nothing but latency.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{random_hex, to_hex, valid_name, AccountError, Accounts, Role, UserInfo};

/// `last_used_ms` is written at most this often, sparing the SD card a
/// write per request.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_by: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredToken {
    info: TokenInfo,
    secret_sha256: String,
}

fn digest_hex(secret: &str) -> String {
    to_hex(&Sha256::digest(secret.as_bytes()))
}

impl Accounts {
    /// Creates a token; returns the secret (shown once) and its description.
    pub fn create_token(
        &self,
        name: &str,
        role: Role,
        created_by: &str,
        now_ms: i64,
    ) -> Result<(String, TokenInfo), AccountError> {
        if !valid_name(name) {
            return Err(AccountError::BadName(name.to_string()));
        }
        let id = random_hex(6);
        let secret = format!("perch_{id}_{}", random_hex(16));
        let info = TokenInfo {
            id: id.clone(),
            name: name.to_string(),
            role,
            created_by: created_by.to_string(),
            created_ms: now_ms,
            last_used_ms: None,
        };
        let stored = StoredToken {
            info: info.clone(),
            secret_sha256: digest_hex(&secret),
        };
        self.tokens.insert(
            id.as_bytes(),
            serde_json::to_vec(&stored).expect("serializable"),
        )?;
        self.tokens.flush()?;
        Ok((secret, info))
    }

    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>, AccountError> {
        let mut out = Vec::new();
        for item in self.tokens.iter() {
            let (k, v) = item?;
            let stored: StoredToken = serde_json::from_slice(&v)
                .map_err(|_| AccountError::Corrupt(String::from_utf8_lossy(&k).into_owned()))?;
            out.push(stored.info);
        }
        out.sort_by_key(|t| t.created_ms);
        Ok(out)
    }

    pub fn delete_token(&self, id: &str) -> Result<bool, AccountError> {
        let existed = self.tokens.remove(id.as_bytes())?.is_some();
        self.tokens.flush()?;
        Ok(existed)
    }

    /// The identity a token secret stands for: named `token:<name>`, with
    /// the token's role and no MQTT topics.
    pub fn verify_token(&self, secret: &str, now_ms: i64) -> Option<UserInfo> {
        let id = secret.strip_prefix("perch_")?.split('_').next()?;
        let raw = self.tokens.get(id.as_bytes()).ok()??;
        let mut stored: StoredToken = serde_json::from_slice(&raw).ok()?;
        let given = digest_hex(secret);
        if !constant_time_eq(given.as_bytes(), stored.secret_sha256.as_bytes()) {
            return None;
        }
        let info = UserInfo {
            name: format!("token:{}", stored.info.name),
            role: stored.info.role,
            created_ms: stored.info.created_ms,
            topics: Vec::new(),
        };
        if stored
            .info
            .last_used_ms
            .is_none_or(|t| now_ms - t >= LAST_USED_RESOLUTION_MS)
        {
            stored.info.last_used_ms = Some(now_ms);
            let _ = self.tokens.insert(
                id.as_bytes(),
                serde_json::to_vec(&stored).expect("serializable"),
            );
        }
        Some(info)
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
