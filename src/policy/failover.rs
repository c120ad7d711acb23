//! The `failover` policy: the service's datacenters in config order, the
//! same for every client (primary, secondary, tertiary...). Health
//! filtering then makes the first healthy one win.

use crate::model::DcId;
use crate::policy::{Client, Policy, Ranked};

/// A built failover policy.
#[derive(Debug)]
pub struct FailoverPolicy {
    order: Vec<DcId>,
}

impl FailoverPolicy {
    /// The policy over `order`.
    pub fn new(order: &[DcId]) -> Self {
        Self {
            order: order.to_vec(),
        }
    }
}

impl Policy for FailoverPolicy {
    fn rank(&self, _client: &Client) -> Ranked<'_> {
        // Scope 0: the answer does not depend on the client.
        Ranked {
            order: &self.order,
            scope: 0,
        }
    }
}
