//! Serialises calls on one volume: a second call waits for the first, up
//! to a bound, and is then answered ABORTED (the CO retries), so a stuck
//! call can never pile up the others behind it forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::error::CsiError;

/// Per-key locks.
#[derive(Debug, Default)]
pub struct KeyLocks {
    map: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Held while a call works on its key.
#[derive(Debug)]
pub struct KeyGuard {
    _guard: OwnedMutexGuard<()>,
}

impl KeyLocks {
    /// Waits up to `wait` for the lock of `key`.
    pub async fn lock(&self, key: &str, wait: Duration) -> Result<KeyGuard, CsiError> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            // Forget locks nobody holds or waits for, so the map stays small.
            map.retain(|_, m| Arc::strong_count(m) > 1 || m.try_lock().is_err());
            map.entry(key.to_string()).or_default().clone()
        };
        match tokio::time::timeout(wait, m.lock_owned()).await {
            Ok(g) => Ok(KeyGuard { _guard: g }),
            Err(_) => Err(CsiError::Aborted(format!(
                "another operation on {key:?} is still in progress"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_caller_is_aborted_while_the_first_holds_on() {
        let locks = KeyLocks::default();
        let g = locks.lock("v", Duration::from_secs(1)).await.unwrap();
        let e = locks
            .lock("v", Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(e, CsiError::Aborted(_)));
        assert!(locks.lock("w", Duration::from_millis(50)).await.is_ok());
        drop(g);
        assert!(locks.lock("v", Duration::from_millis(50)).await.is_ok());
    }
}
