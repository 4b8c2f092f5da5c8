//! Pod address management the way Calico IPAM does it.
//!
//! What is modelled, from Calico's `libcalico-go/lib/ipam` (read, not copied) and the IPPool
//! reference docs:
//! - an IP pool is cut into blocks of `blockSize` (default /26 for IPv4; Calico accepts 20..=32);
//! - a block is claimed by one node ("affinity `host:<node>`") and that node's pods get their
//!   addresses from its affine blocks first;
//! - inside a block, addresses come from an "unallocated" list that starts in ordinal order;
//!   a released address is appended to the end, so it is not handed out again straight away;
//! - when a node's blocks are full it claims a new block; when no block is left unclaimed it
//!   borrows a free address from another node's block (Calico's default, `strictAffinity: false`);
//! - a pool with `disabled: true`, a node selector that does not select the node, or
//!   `allowedUses` without `Workload` is not used for new pod addresses.
//!
//! Deliberate simplifications: Calico picks an unclaimed block at a random offset; this model
//! takes the lowest unclaimed one, so runs are reproducible. Pools are tried in the order given.
//! IPv6 pools are skipped with a reason. Tunnel addresses (tunl0/vxlan) are not allocated.

use crate::pointer::At;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;

use serde_json::Value;

use super::cidr::{CidrError, Ipv4Cidr};
use super::labels::Labels;

/// One usable IPv4 pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPool {
    /// The pool's name (IPPool `metadata.name`, or the Installation entry's name).
    pub name: String,
    /// Its CIDR.
    pub cidr: Ipv4Cidr,
    /// Block prefix length (26 unless set).
    pub block_size: u8,
    /// Disabled pools keep existing allocations but give no new ones.
    pub disabled: bool,
    /// Calico selector over node labels; empty means `all()`.
    pub node_selector: String,
}

/// A pool the model does not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPool {
    /// The pool's name.
    pub name: String,
    /// Its CIDR as written.
    pub cidr: String,
    /// Why it is not used.
    pub reason: String,
}

/// Why an address could not be allocated or assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpamError {
    /// No enabled IPv4 pool selects the node.
    NoPool {
        /// The node.
        node: String,
    },
    /// Every eligible pool is full.
    Exhausted {
        /// The node.
        node: String,
    },
    /// The address belongs to another handle.
    InUse {
        /// The address.
        ip: Ipv4Addr,
        /// Its current handle.
        by: String,
    },
    /// The address is in no pool.
    NotInPool {
        /// The address.
        ip: Ipv4Addr,
    },
    /// The handle already holds a different address.
    HandleHasAddress {
        /// The handle.
        handle: String,
        /// What it holds.
        ip: Ipv4Addr,
    },
}

impl fmt::Display for IpamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpamError::NoPool { node } => write!(f, "no enabled IPv4 pool selects node {node}"),
            IpamError::Exhausted { node } => write!(
                f,
                "no free pod address left for node {node}: every eligible IP pool is full"
            ),
            IpamError::InUse { ip, by } => write!(f, "{ip} is already assigned to {by}"),
            IpamError::NotInPool { ip } => write!(f, "{ip} is in no IP pool"),
            IpamError::HandleHasAddress { handle, ip } => write!(f, "{handle} already holds {ip}"),
        }
    }
}

impl std::error::Error for IpamError {}

/// A block as seen from outside, e.g. to render `IPAMBlock` objects or to check affinity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    /// The block's CIDR.
    pub cidr: Ipv4Cidr,
    /// The pool it belongs to.
    pub pool: String,
    /// The node it is affine to, if any.
    pub affinity: Option<String>,
    /// Addresses in use.
    pub allocated: u32,
    /// Addresses free.
    pub free: u32,
}

impl IpPool {
    /// A pool from its CIDR; `block_size` defaults to 26.
    pub fn new(name: &str, cidr: &str, block_size: Option<u8>) -> Result<IpPool, SkippedPool> {
        let skip = |reason: String| SkippedPool {
            name: name.to_string(),
            cidr: cidr.to_string(),
            reason,
        };
        let net = Ipv4Cidr::parse(cidr).map_err(|e| match e {
            CidrError::Ipv6(_) => skip("IPv6 pool: the network model allocates IPv4 only".into()),
            CidrError::Invalid(_) => skip(format!("{cidr:?} is not a valid CIDR")),
        })?;
        let block_size = block_size.unwrap_or(26);
        if !(20..=32).contains(&block_size) {
            return Err(skip(format!(
                "blockSize {block_size} is outside Calico's IPv4 range 20-32"
            )));
        }
        if block_size < net.prefix() {
            return Err(skip(format!(
                "blockSize /{block_size} is larger than the pool /{}",
                net.prefix()
            )));
        }
        Ok(IpPool {
            name: name.to_string(),
            cidr: net,
            block_size,
            disabled: false,
            node_selector: String::new(),
        })
    }
}

/// Reads pools from Calico objects: `IPPool` (crd.projectcalico.org/v1 or projectcalico.org/v3)
/// and operator `Installation` (`spec.calicoNetwork.ipPools`). Other kinds are ignored. A CIDR
/// seen twice is kept once (the operator writes IPPools from the Installation, so both appear).
pub fn pools_from_objects<'a>(
    objects: impl IntoIterator<Item = &'a Value>,
) -> (Vec<IpPool>, Vec<SkippedPool>) {
    let mut pools: Vec<IpPool> = Vec::new();
    let mut skipped = Vec::new();
    let mut add = |r: Result<IpPool, SkippedPool>| match r {
        Ok(p) if pools.iter().any(|q| q.cidr == p.cidr) => {}
        Ok(p) => pools.push(p),
        Err(s) => skipped.push(s),
    };
    for obj in objects {
        match obj.get("kind").and_then(Value::as_str) {
            Some("IPPool") => {
                let name = obj
                    .at("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                add(pool_from_spec(
                    name,
                    obj.get("spec").unwrap_or(&Value::Null),
                ));
            }
            Some("Installation") => {
                let list = obj
                    .at("/spec/calicoNetwork/ipPools")
                    .and_then(Value::as_array);
                for (i, spec) in list.into_iter().flatten().enumerate() {
                    let default_name = format!("installation-pool-{i}");
                    let name = spec
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or(&default_name);
                    add(pool_from_spec(name, spec));
                }
            }
            _ => {}
        }
    }
    (pools, skipped)
}

fn pool_from_spec(name: &str, spec: &Value) -> Result<IpPool, SkippedPool> {
    let cidr = spec.get("cidr").and_then(Value::as_str).unwrap_or("");
    let block_size = spec
        .get("blockSize")
        .and_then(Value::as_u64)
        .map(|b| u8::try_from(b).unwrap_or(u8::MAX));
    let mut pool = IpPool::new(name, cidr, block_size)?;
    pool.disabled = spec
        .get("disabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    pool.node_selector = spec
        .get("nodeSelector")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(uses) = spec.get("allowedUses").and_then(Value::as_array)
        && !uses.iter().any(|u| u.as_str() == Some("Workload"))
    {
        return Err(SkippedPool {
            name: name.into(),
            cidr: cidr.into(),
            reason: "allowedUses excludes Workload".into(),
        });
    }
    if let Err(e) = NodeSel::parse(&pool.node_selector) {
        return Err(SkippedPool {
            name: name.into(),
            cidr: cidr.into(),
            reason: e,
        });
    }
    Ok(pool)
}

/// The subset of Calico's selector language that pool node selectors use in practice:
/// `all()`, `!all()`, `has(k)`, `!has(k)`, `k == 'v'`, `k != 'v'`, joined by `&&`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeTerm {
    All,
    Never,
    Has(String),
    NotHas(String),
    Eq(String, String),
    Ne(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeSel(Vec<NodeTerm>);

impl NodeSel {
    fn parse(s: &str) -> Result<NodeSel, String> {
        if s.trim().is_empty() {
            return Ok(NodeSel(vec![NodeTerm::All]));
        }
        let unquote = |v: &str| {
            let v = v.trim();
            let q = v.chars().next().filter(|c| *c == '\'' || *c == '"')?;
            v.strip_prefix(q)?.strip_suffix(q).map(str::to_string)
        };
        let mut terms = Vec::new();
        for part in s.split("&&") {
            let t = part.trim();
            let term = if t == "all()" {
                NodeTerm::All
            } else if t == "!all()" {
                NodeTerm::Never
            } else if let Some(k) = t.strip_prefix("!has(").and_then(|r| r.strip_suffix(')')) {
                NodeTerm::NotHas(k.trim().to_string())
            } else if let Some(k) = t.strip_prefix("has(").and_then(|r| r.strip_suffix(')')) {
                NodeTerm::Has(k.trim().to_string())
            } else if let Some((k, v)) = t.split_once("!=") {
                NodeTerm::Ne(
                    k.trim().to_string(),
                    unquote(v).ok_or_else(|| unsupported(s))?,
                )
            } else if let Some((k, v)) = t.split_once("==") {
                NodeTerm::Eq(
                    k.trim().to_string(),
                    unquote(v).ok_or_else(|| unsupported(s))?,
                )
            } else {
                return Err(unsupported(s));
            };
            terms.push(term);
        }
        Ok(NodeSel(terms))
    }

    fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|t| match t {
            NodeTerm::All => true,
            NodeTerm::Never => false,
            NodeTerm::Has(k) => labels.contains_key(k),
            NodeTerm::NotHas(k) => !labels.contains_key(k),
            NodeTerm::Eq(k, v) => labels.get(k) == Some(v),
            NodeTerm::Ne(k, v) => labels.get(k) != Some(v),
        })
    }
}

fn unsupported(s: &str) -> String {
    format!(
        "nodeSelector {s:?} uses Calico selector syntax beyond what the network model reads (all(), has(), ==, != joined by &&)"
    )
}

#[derive(Debug, Clone)]
struct PoolState {
    pool: IpPool,
    sel: NodeSel,
    blocks_total: u64,
    /// Lower bound of the lowest unclaimed block number.
    next_unclaimed: u64,
}

#[derive(Debug, Clone)]
struct Block {
    pool: usize,
    number: u64,
    cidr: Ipv4Cidr,
    affinity: Option<String>,
    unallocated: VecDeque<u32>,
    used: u32,
}

/// Calico-style IPAM state for a cluster.
#[derive(Debug, Clone, Default)]
pub struct Ipam {
    pools: Vec<PoolState>,
    skipped: Vec<SkippedPool>,
    blocks: Vec<Option<Block>>,
    block_index: HashMap<(usize, u64), usize>,
    affine: HashMap<String, Vec<usize>>,
    handles: HashMap<String, Ipv4Addr>,
    owners: HashMap<Ipv4Addr, String>,
}

impl Ipam {
    /// IPAM over `pools` (in preference order); pools that cannot be used are listed in
    /// [`Ipam::skipped`].
    pub fn new(pools: Vec<IpPool>) -> Ipam {
        let mut ipam = Ipam::default();
        for pool in pools {
            // The fields are public, so a hand-built pool may carry a block size that
            // IpPool::new would have refused; check again rather than shift out of range.
            let (b, p) = (pool.block_size, pool.cidr.prefix());
            let checked = if !(20..=32).contains(&b) || b < p {
                Err(format!(
                    "blockSize {b} does not fit the pool /{p} (Calico: 20-32, not larger than the pool)"
                ))
            } else {
                NodeSel::parse(&pool.node_selector)
            };
            match checked {
                Ok(sel) => {
                    let blocks_total = 1u64 << (pool.block_size - pool.cidr.prefix());
                    ipam.pools.push(PoolState {
                        pool,
                        sel,
                        blocks_total,
                        next_unclaimed: 0,
                    });
                }
                Err(reason) => {
                    ipam.skipped.push(SkippedPool {
                        name: pool.name.clone(),
                        cidr: pool.cidr.to_string(),
                        reason,
                    });
                }
            }
        }
        ipam
    }

    /// IPAM from Calico `IPPool`/`Installation` objects (see [`pools_from_objects`]).
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Ipam {
        let (pools, skipped) = pools_from_objects(objects);
        let mut ipam = Ipam::new(pools);
        ipam.skipped.splice(0..0, skipped);
        ipam
    }

    /// Pools that are not used, with the reason (IPv6, bad CIDR, unsupported selector...).
    pub fn skipped(&self) -> &[SkippedPool] {
        &self.skipped
    }

    /// The pools in use.
    pub fn pools(&self) -> impl Iterator<Item = &IpPool> {
        self.pools.iter().map(|p| &p.pool)
    }

    /// The address held by `handle`.
    pub fn ip_of(&self, handle: &str) -> Option<Ipv4Addr> {
        self.handles.get(handle).copied()
    }

    /// The handle holding `ip`.
    pub fn handle_of(&self, ip: Ipv4Addr) -> Option<&str> {
        self.owners.get(&ip).map(String::as_str)
    }

    /// How many addresses are allocated.
    pub fn allocated(&self) -> usize {
        self.handles.len()
    }

    /// Allocates an address for `handle` (kubesim uses `namespace/name` of the pod) on `node`
    /// (whose labels feed pool node selectors). Asking again for the same handle returns the
    /// address it already holds, as a retried CNI ADD would.
    pub fn allocate(
        &mut self,
        handle: &str,
        node: &str,
        node_labels: &Labels,
    ) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.handles.get(handle) {
            return Ok(*ip);
        }
        let eligible: Vec<usize> = (0..self.pools.len())
            .filter(|&i| !self.pools[i].pool.disabled && self.pools[i].sel.matches(node_labels))
            .collect();
        if eligible.is_empty() {
            return Err(IpamError::NoPool {
                node: node.to_string(),
            });
        }
        // 1. A free address in one of the node's own blocks.
        let own = self.affine.get(node).cloned().unwrap_or_default();
        for b in own {
            if let Some(ip) = self.take_from(b, &eligible, handle) {
                return Ok(ip);
            }
        }
        // 2. A new block for the node.
        for &p in &eligible {
            if let Some(b) = self.claim_block(p, node)
                && let Some(ip) = self.take_from(b, &eligible, handle)
            {
                return Ok(ip);
            }
        }
        // 3. Borrow from another node's block (strictAffinity false).
        for b in 0..self.blocks.len() {
            if let Some(ip) = self.take_from(b, &eligible, handle) {
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted {
            node: node.to_string(),
        })
    }

    /// Releases the address of `handle` (pod deleted); returns it.
    pub fn release(&mut self, handle: &str) -> Option<Ipv4Addr> {
        let ip = self.handles.remove(handle)?;
        self.owners.remove(&ip);
        if let Some((b, ordinal)) = self.locate(ip)
            && let Some(Some(block)) = self.blocks.get_mut(b)
        {
            block.unallocated.push_back(ordinal);
            block.used = block.used.saturating_sub(1);
        }
        Some(ip)
    }

    /// Forgets a deleted node: its empty blocks are freed, its other blocks lose their
    /// affinity (as Calico's kube-controllers do when the Node object goes away).
    pub fn release_node(&mut self, node: &str) {
        for b in self.affine.remove(node).unwrap_or_default() {
            let Some(slot) = self.blocks.get_mut(b) else {
                continue;
            };
            let Some(block) = slot.as_mut() else { continue };
            block.affinity = None;
            if block.used == 0 {
                let (pool, number) = (block.pool, block.number);
                *slot = None;
                self.block_index.remove(&(pool, number));
                if let Some(p) = self.pools.get_mut(pool) {
                    p.next_unclaimed = p.next_unclaimed.min(number);
                }
            }
        }
    }

    /// Records that `handle` holds `ip` on `node`, e.g. for pods that already exist when
    /// kubesim starts. If the address's block is unclaimed, `node` claims it.
    pub fn assign(&mut self, handle: &str, node: &str, ip: Ipv4Addr) -> Result<(), IpamError> {
        match self.handles.get(handle) {
            Some(held) if *held == ip => return Ok(()),
            Some(held) => {
                return Err(IpamError::HandleHasAddress {
                    handle: handle.into(),
                    ip: *held,
                });
            }
            None => {}
        }
        if let Some(by) = self.owners.get(&ip) {
            return Err(IpamError::InUse { ip, by: by.clone() });
        }
        let Some(p) = self.pools.iter().position(|p| p.pool.cidr.contains(ip)) else {
            return Err(IpamError::NotInPool { ip });
        };
        let number = self.block_number(p, ip);
        let b = match self.block_index.get(&(p, number)) {
            Some(&b) => b,
            None => self.create_block(p, number, Some(node)),
        };
        let Some(Some(block)) = self.blocks.get_mut(b) else {
            return Err(IpamError::NotInPool { ip });
        };
        let ordinal = block
            .cidr
            .offset_of(ip)
            .and_then(|o| u32::try_from(o).ok())
            .unwrap_or(u32::MAX);
        let Some(pos) = block.unallocated.iter().position(|o| *o == ordinal) else {
            return Err(IpamError::InUse {
                ip,
                by: "another allocation".into(),
            });
        };
        block.unallocated.remove(pos);
        block.used += 1;
        self.handles.insert(handle.to_string(), ip);
        self.owners.insert(ip, handle.to_string());
        Ok(())
    }

    /// Restores allocations from existing Pod objects so their addresses stay stable: every
    /// running or pending pod on the pod network with an IPv4 `status.podIP` inside a pool keeps
    /// it (handle `namespace/name`). Pods are taken in address order, so the node of the lowest
    /// address in a block claims it, whatever order the caller lists pods in. Returns one note
    /// per pod that could not be restored (IPv6, outside every pool, duplicate address...).
    pub fn restore_pods<'a>(&mut self, pods: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
        let mut notes = Vec::new();
        // (address, 0 for running pods so they win a duplicate address, handle, node)
        let mut todo: Vec<(Ipv4Addr, u8, String, String)> = Vec::new();
        for pod in pods {
            if pod.at("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let phase = pod
                .at("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("");
            if phase == "Succeeded" || phase == "Failed" {
                continue;
            }
            let ns = pod
                .at("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let name = pod
                .at("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let handle = format!("{ns}/{name}");
            let Some(ip) = pod.at("/status/podIP").and_then(Value::as_str) else {
                continue;
            };
            let Some(node) = pod.at("/spec/nodeName").and_then(Value::as_str) else {
                notes.push(format!(
                    "{handle}: has podIP {ip} but no spec.nodeName; not restored"
                ));
                continue;
            };
            match ip.parse::<Ipv4Addr>() {
                Ok(ip) => todo.push((ip, u8::from(phase != "Running"), handle, node.to_string())),
                Err(_) if ip.contains(':') => notes.push(format!(
                    "{handle}: IPv6 podIP {ip} skipped (IPv4-only model)"
                )),
                Err(_) => notes.push(format!("{handle}: podIP {ip:?} is not an address")),
            }
        }
        todo.sort();
        for (ip, _, handle, node) in todo {
            if let Err(e) = self.assign(&handle, &node, ip) {
                notes.push(format!("{handle}: {e}"));
            }
        }
        notes
    }

    /// Restores Calico `IPAMBlock` objects (crd.projectcalico.org/v1): block affinity, the
    /// allocations (handle from `attributes[].secondary` namespace/pod when present, otherwise
    /// the `handle_id`) and the order of the unallocated list. Returns notes for blocks that
    /// could not be used.
    pub fn restore_blocks<'a>(
        &mut self,
        blocks: impl IntoIterator<Item = &'a Value>,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        for obj in blocks {
            let spec = obj.get("spec").unwrap_or(&Value::Null);
            let cidr_s = spec.get("cidr").and_then(Value::as_str).unwrap_or("");
            let cidr = match Ipv4Cidr::parse(cidr_s) {
                Ok(c) => c,
                Err(e) => {
                    notes.push(format!("IPAMBlock {cidr_s}: {e}"));
                    continue;
                }
            };
            let Some(p) = self.pools.iter().position(|p| {
                p.pool.cidr.contains_net(&cidr) && p.pool.block_size == cidr.prefix()
            }) else {
                notes.push(format!("IPAMBlock {cidr}: matches no pool's block size"));
                continue;
            };
            let number = self.block_number(p, cidr.network());
            if self.block_index.contains_key(&(p, number)) {
                notes.push(format!("IPAMBlock {cidr}: already known"));
                continue;
            }
            let affinity = spec
                .get("affinity")
                .and_then(Value::as_str)
                .and_then(|a| a.strip_prefix("host:"));
            let b = self.create_block(p, number, affinity);
            let attrs = spec
                .get("attributes")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let allocations = spec
                .get("allocations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut taken = Vec::new();
            for (ordinal, a) in allocations.iter().enumerate() {
                let Some(ai) = a.as_u64() else { continue };
                let attr = usize::try_from(ai).ok().and_then(|i| attrs.get(i));
                let handle = attr
                    .and_then(|at| {
                        let ns = at.at("/secondary/namespace").and_then(Value::as_str)?;
                        let pod = at.at("/secondary/pod").and_then(Value::as_str)?;
                        Some(format!("{ns}/{pod}"))
                    })
                    .or_else(|| {
                        attr.and_then(|at| at.get("handle_id"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| format!("{cidr}#{ordinal}"));
                let Some(ip) = cidr.nth(ordinal as u64) else {
                    continue;
                };
                if self.handles.contains_key(&handle) || self.owners.contains_key(&ip) {
                    notes.push(format!(
                        "IPAMBlock {cidr}: {ip} for {handle} conflicts with an existing allocation"
                    ));
                    continue;
                }
                self.handles.insert(handle.clone(), ip);
                self.owners.insert(ip, handle);
                taken.push(ordinal as u32);
            }
            if let Some(Some(block)) = self.blocks.get_mut(b) {
                block.used = taken.len() as u32;
                let listed: Option<Vec<u32>> =
                    spec.get("unallocated").and_then(Value::as_array).map(|a| {
                        a.iter()
                            .filter_map(Value::as_u64)
                            .filter_map(|o| u32::try_from(o).ok())
                            .collect()
                    });
                block.unallocated = match listed {
                    Some(order) => order
                        .into_iter()
                        .filter(|o| !taken.contains(o) && u64::from(*o) < cidr.size())
                        .collect(),
                    None => block
                        .unallocated
                        .iter()
                        .copied()
                        .filter(|o| !taken.contains(o))
                        .collect(),
                };
            }
        }
        notes
    }

    /// Every block, in claim order.
    pub fn blocks(&self) -> Vec<BlockInfo> {
        self.blocks
            .iter()
            .flatten()
            .map(|b| BlockInfo {
                cidr: b.cidr,
                pool: self.pools[b.pool].pool.name.clone(),
                affinity: b.affinity.clone(),
                allocated: b.used,
                free: b.unallocated.len() as u32,
            })
            .collect()
    }

    fn take_from(&mut self, b: usize, eligible: &[usize], handle: &str) -> Option<Ipv4Addr> {
        let block = self.blocks.get_mut(b)?.as_mut()?;
        if !eligible.contains(&block.pool) {
            return None;
        }
        let ordinal = block.unallocated.pop_front()?;
        let ip = block.cidr.nth(u64::from(ordinal))?;
        block.used += 1;
        self.handles.insert(handle.to_string(), ip);
        self.owners.insert(ip, handle.to_string());
        Some(ip)
    }

    fn claim_block(&mut self, p: usize, node: &str) -> Option<usize> {
        let total = self.pools[p].blocks_total;
        let mut n = self.pools[p].next_unclaimed;
        while n < total && self.block_index.contains_key(&(p, n)) {
            n += 1;
        }
        self.pools[p].next_unclaimed = n;
        (n < total).then(|| self.create_block(p, n, Some(node)))
    }

    fn create_block(&mut self, p: usize, number: u64, node: Option<&str>) -> usize {
        let pool = &self.pools[p].pool;
        let offset = number << (32 - u32::from(pool.block_size));
        let base = pool.cidr.nth(offset).unwrap_or(pool.cidr.network());
        let cidr = Ipv4Cidr::new(base, pool.block_size);
        let size = u32::try_from(cidr.size()).unwrap_or(u32::MAX);
        let block = Block {
            pool: p,
            number,
            cidr,
            affinity: node.map(str::to_string),
            unallocated: (0..size).collect(),
            used: 0,
        };
        self.blocks.push(Some(block));
        let b = self.blocks.len() - 1;
        self.block_index.insert((p, number), b);
        if let Some(node) = node {
            self.affine.entry(node.to_string()).or_default().push(b);
        }
        b
    }

    fn block_number(&self, p: usize, ip: Ipv4Addr) -> u64 {
        let pool = &self.pools[p].pool;
        pool.cidr.offset_of(ip).unwrap_or(0) >> (32 - u32::from(pool.block_size))
    }

    fn locate(&self, ip: Ipv4Addr) -> Option<(usize, u32)> {
        let p = self.pools.iter().position(|p| p.pool.cidr.contains(ip))?;
        let b = *self.block_index.get(&(p, self.block_number(p, ip)))?;
        let block = self.blocks.get(b)?.as_ref()?;
        let ordinal = u32::try_from(block.cidr.offset_of(ip)?).ok()?;
        Some((b, ordinal))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn none() -> Labels {
        Labels::new()
    }

    fn ipam(cidr: &str, block: u8) -> Ipam {
        Ipam::new(vec![
            IpPool::new("default-ipv4-ippool", cidr, Some(block)).unwrap(),
        ])
    }

    #[test]
    fn blocks_are_affine_per_node_and_addresses_sequential() {
        let mut m = ipam("192.168.0.0/16", 26);
        let a1 = m.allocate("ns/a1", "w1", &none()).unwrap();
        let a2 = m.allocate("ns/a2", "w1", &none()).unwrap();
        let b1 = m.allocate("ns/b1", "w2", &none()).unwrap();
        assert_eq!(a1, Ipv4Addr::new(192, 168, 0, 0));
        assert_eq!(a2, Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(b1, Ipv4Addr::new(192, 168, 0, 64), "w2 claims the next /26");
        let blocks = m.blocks();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].affinity.as_deref(), Some("w1"));
        assert_eq!(blocks[0].cidr.to_string(), "192.168.0.0/26");
        assert_eq!(blocks[1].affinity.as_deref(), Some("w2"));
        // Idempotent per handle.
        assert_eq!(m.allocate("ns/a1", "w1", &none()).unwrap(), a1);
    }

    #[test]
    fn full_block_claims_a_new_one_and_release_goes_to_the_back() {
        let mut m = ipam("10.244.0.0/16", 30); // 4 addresses per block
        let ips: Vec<_> = (0..5)
            .map(|i| m.allocate(&format!("ns/p{i}"), "w1", &none()).unwrap())
            .collect();
        assert_eq!(ips[3], Ipv4Addr::new(10, 244, 0, 3));
        assert_eq!(
            ips[4],
            Ipv4Addr::new(10, 244, 0, 4),
            "second block for the same node"
        );
        assert_eq!(
            m.blocks()
                .iter()
                .filter(|b| b.affinity.as_deref() == Some("w1"))
                .count(),
            2
        );
        assert_eq!(m.release("ns/p1"), Some(Ipv4Addr::new(10, 244, 0, 1)));
        assert_eq!(m.release("ns/p1"), None);
        assert_eq!(m.ip_of("ns/p1"), None);
        // The released .1 goes to the end of block 0's list: block 0 has only .1 free, so it is
        // reused, but in block 1 the never-used .5 comes before a released .4.
        assert_eq!(
            m.allocate("ns/q", "w1", &none()).unwrap(),
            Ipv4Addr::new(10, 244, 0, 1)
        );
        m.release("ns/p4");
        assert_eq!(
            m.allocate("ns/r", "w1", &none()).unwrap(),
            Ipv4Addr::new(10, 244, 0, 5)
        );
    }

    #[test]
    fn exhausted_pool_borrows_then_fails() {
        let mut m = ipam("10.0.0.0/29", 30); // two blocks of four
        for i in 0..4 {
            m.allocate(&format!("a/{i}"), "w1", &none()).unwrap();
        }
        m.allocate("b/0", "w2", &none()).unwrap();
        // w3 finds no unclaimed block: it borrows from w2's block.
        let borrowed = m.allocate("c/0", "w3", &none()).unwrap();
        assert!(Ipv4Cidr::parse("10.0.0.4/30").unwrap().contains(borrowed));
        m.allocate("c/1", "w3", &none()).unwrap();
        m.allocate("c/2", "w3", &none()).unwrap();
        assert_eq!(
            m.allocate("c/3", "w3", &none()),
            Err(IpamError::Exhausted { node: "w3".into() })
        );
    }

    #[test]
    fn ipv6_and_bad_pools_are_skipped_with_reasons() {
        let objs = [
            json!({"kind": "IPPool", "metadata": {"name": "v6"}, "spec": {"cidr": "fd00:10:244::/48"}}),
            json!({"kind": "IPPool", "metadata": {"name": "big"}, "spec": {"cidr": "10.0.0.0/16", "blockSize": 12}}),
            json!({"kind": "IPPool", "metadata": {"name": "odd"}, "spec": {"cidr": "10.1.0.0/16", "nodeSelector": "zone in {'a'}"}}),
            json!({"kind": "IPPool", "metadata": {"name": "lb"}, "spec": {"cidr": "10.2.0.0/16", "allowedUses": ["LoadBalancer"]}}),
            json!({"kind": "IPPool", "metadata": {"name": "ok"}, "spec": {"cidr": "10.244.0.0/16"}}),
            json!({"kind": "Installation", "spec": {"calicoNetwork": {"ipPools": [{"cidr": "10.244.0.0/16", "blockSize": 26}]}}}),
        ];
        let m = Ipam::from_objects(objs.iter());
        assert_eq!(
            m.pools().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["ok"]
        );
        let reasons: Vec<_> = m
            .skipped()
            .iter()
            .map(|s| (s.name.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4);
        assert!(reasons[0].1.contains("IPv6"), "{reasons:?}");
        assert!(reasons[1].1.contains("blockSize"), "{reasons:?}");
        assert!(reasons[2].1.contains("selector"), "{reasons:?}");
        assert!(reasons[3].1.contains("Workload"), "{reasons:?}");
    }

    #[test]
    fn hand_built_pool_with_bad_block_size_is_skipped() {
        let mut p = IpPool::new("p", "10.0.0.0/16", None).unwrap();
        p.block_size = 8;
        let m = Ipam::new(vec![p]);
        assert_eq!(m.pools().count(), 0);
        assert!(
            m.skipped()[0].reason.contains("blockSize 8"),
            "{:?}",
            m.skipped()
        );
    }

    #[test]
    fn node_selector_and_disabled_pools() {
        let mut gpu = IpPool::new("gpu", "10.10.0.0/24", None).unwrap();
        gpu.node_selector = "pool == 'gpu' && has(kubernetes.io/hostname)".into();
        let mut off = IpPool::new("off", "10.20.0.0/24", None).unwrap();
        off.disabled = true;
        let mut m = Ipam::new(vec![off, gpu]);
        let mut labels = Labels::new();
        assert_eq!(
            m.allocate("a/x", "w1", &labels),
            Err(IpamError::NoPool { node: "w1".into() })
        );
        labels.insert("pool".into(), "gpu".into());
        labels.insert("kubernetes.io/hostname".into(), "w1".into());
        assert_eq!(
            m.allocate("a/x", "w1", &labels).unwrap(),
            Ipv4Addr::new(10, 10, 0, 0)
        );
    }

    #[test]
    fn restore_from_pods_keeps_addresses_and_affinity() {
        let pods = [
            json!({"metadata": {"namespace": "a", "name": "p2"}, "spec": {"nodeName": "w1"}, "status": {"phase": "Running", "podIP": "10.244.0.2"}}),
            json!({"metadata": {"namespace": "a", "name": "p0"}, "spec": {"nodeName": "w1"}, "status": {"phase": "Running", "podIP": "10.244.0.0"}}),
            json!({"metadata": {"namespace": "a", "name": "h"}, "spec": {"nodeName": "w1", "hostNetwork": true}, "status": {"podIP": "172.18.0.2"}}),
            json!({"metadata": {"namespace": "a", "name": "far"}, "spec": {"nodeName": "w2"}, "status": {"phase": "Running", "podIP": "172.30.0.9"}}),
            json!({"metadata": {"namespace": "a", "name": "v6"}, "spec": {"nodeName": "w2"}, "status": {"phase": "Running", "podIP": "fd00::5"}}),
            json!({"metadata": {"namespace": "a", "name": "dup"}, "spec": {"nodeName": "w2"}, "status": {"phase": "Pending", "podIP": "10.244.0.2"}}),
        ];
        let mut m = ipam("10.244.0.0/16", 26);
        let notes = m.restore_pods(pods.iter());
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert_eq!(m.ip_of("a/p0"), Some(Ipv4Addr::new(10, 244, 0, 0)));
        assert_eq!(m.ip_of("a/p2"), Some(Ipv4Addr::new(10, 244, 0, 2)));
        assert_eq!(m.blocks()[0].affinity.as_deref(), Some("w1"));
        // The gap at .1 is handed out next, then .3: nothing restored gets reused.
        assert_eq!(
            m.allocate("a/new", "w1", &none()).unwrap(),
            Ipv4Addr::new(10, 244, 0, 1)
        );
        assert_eq!(
            m.allocate("a/new2", "w1", &none()).unwrap(),
            Ipv4Addr::new(10, 244, 0, 3)
        );
    }

    #[test]
    fn restore_from_ipam_blocks() {
        let block = json!({
            "kind": "IPAMBlock",
            "spec": {
                "cidr": "10.244.1.0/26", "affinity": "host:w7",
                "allocations": [0, null, 1],
                "unallocated": [5, 1, 3, 4],
                "attributes": [
                    {"handle_id": "k8s-pod-network.abc", "secondary": {"namespace": "kube-system", "pod": "coredns-1"}},
                    {"handle_id": "ipip-tunnel-addr-w7"}
                ]
            }
        });
        let mut m = ipam("10.244.0.0/16", 26);
        assert!(m.restore_blocks([&block]).is_empty());
        assert_eq!(
            m.ip_of("kube-system/coredns-1"),
            Some(Ipv4Addr::new(10, 244, 1, 0))
        );
        assert_eq!(
            m.ip_of("ipip-tunnel-addr-w7"),
            Some(Ipv4Addr::new(10, 244, 1, 2))
        );
        assert_eq!(
            m.allocate("x/y", "w7", &none()).unwrap(),
            Ipv4Addr::new(10, 244, 1, 5),
            "unallocated order kept"
        );
        assert_eq!(
            m.allocate("x/z", "w8", &none()).unwrap(),
            Ipv4Addr::new(10, 244, 0, 0),
            "w8 claims block 0"
        );
    }

    #[test]
    fn deleted_node_frees_empty_blocks() {
        let mut m = ipam("10.244.0.0/16", 26);
        m.allocate("a/1", "w1", &none()).unwrap();
        m.release("a/1");
        m.release_node("w1");
        assert!(m.blocks().is_empty());
        assert_eq!(
            m.allocate("a/2", "w2", &none()).unwrap(),
            Ipv4Addr::new(10, 244, 0, 0)
        );
    }
}
