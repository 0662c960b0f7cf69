//! Record links (Unifi's bonds), read and repaired by hand: per flow, a
//! record's key → the id its target gave it when it was created. The sender
//! makes them (stored with the delivery's ack); a person lists them and
//! sets or deletes one — audited — when the target's copy was merged,
//! deleted or recreated behind sluice's back.

use super::Site;
use crate::engine::{EngineError, Result};
use crate::log::level;
use crate::model::Refusal;
use crate::store::Link;

/// The most links one answer lists.
pub const MAX_LINKS: usize = 1000;

impl Site {
    /// The flow's links by key, after `after` (exclusive), at most `limit`;
    /// only `key`'s when given.
    pub async fn links(
        &self,
        flow: &str,
        key: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Link>> {
        self.flow(flow)?;
        Ok(self
            .store
            .links(flow, key, after, limit.min(MAX_LINKS))
            .await?)
    }

    /// Sets the link of `key` by hand: its next record goes to `link`.
    pub async fn set_link(&self, flow: &str, key: &str, link: &str, actor: &str) -> Result<Link> {
        let subject = format!("flow/{flow}/link/{key}");
        self.linking(flow, actor, "link.set", &subject).await?;
        if link.is_empty() || link.len() > 1024 || key.len() > 1024 {
            let refusal = Refusal::Invalid("a key and a link have 1 to 1024 bytes".into());
            return self
                .refused(actor, "link.set", &subject, None, refusal)
                .await;
        }
        self.store.set_link(flow, key, link).await?;
        self.log
            .write(
                level::INFO,
                format!("Link of key {key} in flow {flow} set to {link} by {actor}"),
            )
            .await;
        self.audit(actor, "link.set", &subject, None, "ok").await;
        let mut found = self.store.links(flow, Some(key), None, 1).await?;
        Ok(found.pop().unwrap_or(Link {
            flow: flow.into(),
            key: key.into(),
            link: link.into(),
            updated_at: 0,
        }))
    }

    /// Deletes the link of `key` by hand: its next record is a create.
    pub async fn delete_link(&self, flow: &str, key: &str, actor: &str) -> Result<()> {
        let subject = format!("flow/{flow}/link/{key}");
        self.linking(flow, actor, "link.delete", &subject).await?;
        if !self.store.delete_link(flow, key).await? {
            let missing = format!("flow {flow} has no link for key {key}");
            self.audit(
                actor,
                "link.delete",
                &subject,
                None,
                &format!("refused: {missing}"),
            )
            .await;
            return Err(EngineError::NotFound(missing));
        }
        self.log
            .write(
                level::INFO,
                format!("Link of key {key} in flow {flow} deleted by {actor}"),
            )
            .await;
        self.audit(actor, "link.delete", &subject, None, "ok").await;
        Ok(())
    }

    /// Refuses (audited) a repair of a flow whose target links nothing.
    async fn linking(&self, flow: &str, actor: &str, action: &str, subject: &str) -> Result<()> {
        let (_, fc) = self.flow(flow)?;
        let links = self
            .endpoint(&fc.target)
            .ok()
            .and_then(|e| e.target.as_ref())
            .is_some_and(|t| t.links());
        if links {
            return Ok(());
        }
        let refusal = Refusal::Invalid(format!(
            "flow {flow}'s target {} links no records (it sets no `link`)",
            fc.target
        ));
        self.refused(actor, action, subject, None, refusal).await
    }
}
