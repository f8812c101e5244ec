//! A flag set once and awaited by any number of tasks: a task's cancellation, a worker's stop.

use tokio::sync::watch;

/// Cheap to clone; clones share the flag.
#[derive(Debug, Clone)]
pub(crate) struct Flag(watch::Sender<bool>);

impl Default for Flag {
    fn default() -> Self {
        Self(watch::Sender::new(false))
    }
}

impl Flag {
    pub(crate) fn set(&self) {
        self.0.send_replace(true);
    }

    pub(crate) fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Returns once the flag is set (at once if it is).
    pub(crate) async fn wait(&self) {
        let mut receiver = self.0.subscribe();
        // The sender is `self`, so the channel cannot close while this waits.
        let _ = receiver.wait_for(|set| *set).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_flag_is_set_and_later_waits_return_at_once() {
        let flag = Flag::default();
        assert!(!flag.is_set());
        let waiter = tokio::spawn({
            let flag = flag.clone();
            async move { flag.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        flag.set();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter woke")
            .expect("joined");
        assert!(flag.is_set());
        flag.wait().await;
    }
}
