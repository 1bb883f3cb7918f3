//! Removing members. Nothing references a member row by key (activity, assignments and
//! delegations keep the email as text), so deleting the row leaves the history intact.

use super::entities::member;
use super::{StoreResult, Tx};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

impl Tx {
    /// Deletes one member; returns whether a row went.
    pub async fn delete_member(&self, workspace_id: &str, member_id: &str) -> StoreResult<bool> {
        self.bump_auth_generation().await?;
        let res = member::Entity::delete_many()
            .filter(member::Column::WorkspaceId.eq(workspace_id))
            .filter(member::Column::Id.eq(member_id))
            .exec(&self.tx)
            .await?;
        Ok(res.rows_affected > 0)
    }
}
