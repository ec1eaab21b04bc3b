//! Browser sessions: a random cookie value per sign-in, stored only as its
//! SHA-256 (a copied database holds no live sessions), with the CSRF token
//! the dashboard echoes on every state-changing request.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{random_hex, AccountError, Accounts, UserInfo};

/// How long a sign-in lasts.
pub const SESSION_TTL_MS: i64 = 14 * 24 * 3600 * 1000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

fn session_key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

impl Accounts {
    /// Starts a session for `user`; returns the cookie value and the session.
    pub fn create_session(
        &self,
        user: &str,
        now_ms: i64,
    ) -> Result<(String, Session), AccountError> {
        self.prune_sessions(now_ms)?;
        let cookie = random_hex(32);
        let session = Session {
            user: user.to_string(),
            csrf: random_hex(16),
            created_ms: now_ms,
            expires_ms: now_ms + SESSION_TTL_MS,
        };
        let value = serde_json::to_vec(&session).expect("serializable");
        self.sessions.insert(session_key(&cookie), value)?;
        self.sessions.flush()?;
        Ok((cookie, session))
    }

    /// The signed-in user behind a cookie value, if the session is live and
    /// the user still exists (a deleted user's sessions end with them).
    pub fn session(&self, cookie: &str, now_ms: i64) -> Option<(UserInfo, Session)> {
        let key = session_key(cookie);
        let raw = self.sessions.get(key).ok()??;
        let session: Session = serde_json::from_slice(&raw).ok()?;
        if session.expires_ms <= now_ms {
            let _ = self.sessions.remove(key);
            return None;
        }
        let user = self.get(&session.user)?;
        Some((user, session))
    }

    pub fn end_session(&self, cookie: &str) -> Result<(), AccountError> {
        self.sessions.remove(session_key(cookie))?;
        self.sessions.flush()?;
        Ok(())
    }

    /// Ends every session of `user` (deleted, or password changed).
    pub(super) fn end_sessions_of(&self, user: &str) -> Result<(), AccountError> {
        for item in self.sessions.iter() {
            let (k, v) = item?;
            if serde_json::from_slice::<Session>(&v).map_or(true, |s| s.user == user) {
                self.sessions.remove(k)?;
            }
        }
        Ok(())
    }

    fn prune_sessions(&self, now_ms: i64) -> Result<(), AccountError> {
        for item in self.sessions.iter() {
            let (k, v) = item?;
            if serde_json::from_slice::<Session>(&v).map_or(true, |s| s.expires_ms <= now_ms) {
                self.sessions.remove(k)?;
            }
        }
        Ok(())
    }
}
