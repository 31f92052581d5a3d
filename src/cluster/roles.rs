//! What a node does: the roles it runs. Every role is one part of the system (the HTTP API,
//! the saga orchestrator, or one service with its database); a cluster spreads them over
//! nodes, and replicas of a service role share its work through a NATS queue group.

use std::fmt;
use std::str::FromStr;

use crate::config::ServiceDb;

/// One part of the system a node can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Serves every route of the HTTP contract and the customers' result streams.
    Api,
    /// Runs the purchase sagas and owns the saga store's partitions.
    Orchestrator,
    Account,
    Product,
    Order,
    Payment,
}

impl Role {
    /// Every role, in the order flags and reports list them.
    pub const ALL: [Role; 6] = [
        Role::Api,
        Role::Orchestrator,
        Role::Account,
        Role::Product,
        Role::Order,
        Role::Payment,
    ];

    /// The role's name in `--roles`, NATS subjects and readiness reports.
    pub fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Orchestrator => "orchestrator",
            Role::Account => "account",
            Role::Product => "product",
            Role::Order => "order",
            Role::Payment => "payment",
        }
    }

    /// The database the role works on (the api reads the saga store for purchases and
    /// stream resumes).
    pub fn database(self) -> ServiceDb {
        match self {
            Role::Api | Role::Orchestrator => ServiceDb::Saga,
            Role::Account => ServiceDb::Account,
            Role::Product => ServiceDb::Product,
            Role::Order => ServiceDb::Order,
            Role::Payment => ServiceDb::Payment,
        }
    }

    /// The other roles this one sends requests to.
    pub fn needs(self) -> &'static [Role] {
        match self {
            // Purchases are stored by the api node itself and started by whichever node
            // owns their partition: accepting needs no orchestrator up.
            Role::Api => &[Role::Account, Role::Product, Role::Order, Role::Payment],
            Role::Orchestrator => &[Role::Product, Role::Order, Role::Payment],
            // An order lists its items with their product names.
            Role::Order => &[Role::Product],
            Role::Account | Role::Product | Role::Payment => &[],
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of roles one node runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    /// Every role: the embedded default.
    pub fn all() -> Self {
        Self::from_iter(Role::ALL)
    }

    /// Whether the node runs `role`.
    pub fn has(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Whether the node runs every role.
    pub fn is_all(self) -> bool {
        self == Self::all()
    }

    /// The roles held, in [`Role::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.has(*r))
    }

    /// The roles this node must reach elsewhere: needed by one of its roles, run by none.
    pub fn remote_needs(self) -> Vec<Role> {
        let mut needed: Vec<Role> = self
            .iter()
            .flat_map(|r| r.needs().iter().copied())
            .filter(|r| !self.has(*r))
            .collect();
        needed.sort();
        needed.dedup();
        needed
    }

    /// The databases this node's roles work on, in opening order.
    pub fn databases(self) -> Vec<ServiceDb> {
        ServiceDb::ALL
            .into_iter()
            .filter(|db| self.iter().any(|r| r.database() == *db))
            .collect()
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(roles: I) -> Self {
        Roles(roles.into_iter().fold(0, |bits, r| bits | r.bit()))
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Role::name).collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Roles({self})")
    }
}

impl FromStr for Roles {
    type Err = String;

    /// `api,orchestrator,...` (or `all`); unknown names and an empty list are refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut roles = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                return Ok(Roles::all());
            }
            let role = Role::ALL
                .into_iter()
                .find(|r| r.name() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown role `{name}`: roles are {}",
                        Roles::all().to_string().replace(',', ", ")
                    )
                })?;
            roles.push(role);
        }
        if roles.is_empty() {
            return Err("give at least one role".into());
        }
        Ok(Roles::from_iter(roles))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_print_and_refuse_unknown_names() {
        let roles: Roles = "api, order,payment".parse().unwrap();
        assert!(roles.has(Role::Api) && roles.has(Role::Order) && !roles.has(Role::Product));
        assert_eq!(roles.to_string(), "api,order,payment");
        assert!("all".parse::<Roles>().unwrap().is_all());
        assert!(
            "api,shipping"
                .parse::<Roles>()
                .unwrap_err()
                .contains("shipping")
        );
        assert!("".parse::<Roles>().is_err());
    }

    #[test]
    fn a_node_reaches_elsewhere_only_what_it_does_not_run() {
        let node2: Roles = "api,order,payment".parse().unwrap();
        assert_eq!(node2.remote_needs(), vec![Role::Account, Role::Product]);
        assert!(Roles::all().remote_needs().is_empty());
        let order_only: Roles = "order".parse().unwrap();
        assert_eq!(order_only.remote_needs(), vec![Role::Product]);
        assert_eq!(order_only.databases(), vec![ServiceDb::Order]);
        assert_eq!(
            node2.databases(),
            vec![ServiceDb::Order, ServiceDb::Payment, ServiceDb::Saga]
        );
    }
}
