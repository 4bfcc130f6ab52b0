//! Random cut forests for Kinesis Data Analytics' `RANDOM_CUT_FOREST`: anomaly scores of a
//! stream of points, each scored against the forest before it joins it.
//!
//! The algorithm is the published one (Guha, Mishra, Roy and Schrijvers, "Robust Random Cut
//! Forest Based Anomaly Detection on Streams", ICML 2016):
//!
//! - Each tree keeps a sample of the stream's points, chosen with exponentially decaying
//!   weights (a point's key is `ln(-ln u) - t / time_decay`; the `sample_size` smallest keys are
//!   kept), so recent points are likelier to be in it.
//! - A tree is a random cut tree of its sample: a cut picks a dimension with probability
//!   proportional to the sample's extent in it, and a value uniformly within that extent.
//!   Points enter and leave a tree by the paper's insertion and deletion, which keep the tree
//!   distributed as if it had been built from its sample afresh.
//! - A point's score in a tree is the expected isolation score of the scoring visitor that AWS
//!   describes for its implementation: `1 / (depth + 1)` where the point would be cut off
//!   (weighted, at each node on the way up, by the probability that a random cut of the node's
//!   box grown by the point separates it), a damped `1 / (depth + log2(1 + mass))` at a leaf
//!   holding the same point, times `log2(1 + points in the tree)`. The forest's score is the mean
//!   over trees: about 1 for points like those seen, higher for anomalies.
//!
//! Scores are 0 until `sample_size / 4` points (after shingling) were seen.

use std::collections::BinaryHeap;

/// A node of a random cut tree (an arena index).
type NodeId = usize;

#[derive(Debug, Clone)]
enum Node {
    Leaf {
        point: Vec<f64>,
        /// Copies of the point in the sample.
        mass: usize,
        parent: Option<NodeId>,
    },
    Cut {
        dim: usize,
        /// Points with `x[dim] <= value` are on the left.
        value: f64,
        left: NodeId,
        right: NodeId,
        parent: Option<NodeId>,
        /// The bounding box of the points below.
        min: Vec<f64>,
        max: Vec<f64>,
        mass: usize,
    },
}

/// One random cut tree and its time-decayed sample.
#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<Option<Node>>,
    free: Vec<NodeId>,
    root: Option<NodeId>,
    /// The sample: largest key on top, to be evicted first.
    sample: BinaryHeap<Sampled>,
}

#[derive(Debug, Clone)]
struct Sampled {
    key: f64,
    point: Vec<f64>,
}

impl PartialEq for Sampled {
    fn eq(&self, other: &Self) -> bool {
        self.key.total_cmp(&other.key).is_eq()
    }
}

impl Eq for Sampled {}

impl PartialOrd for Sampled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sampled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.total_cmp(&other.key)
    }
}

impl Tree {
    fn new() -> Self {
        Self {
            nodes: Vec::new(),
            free: Vec::new(),
            root: None,
            sample: BinaryHeap::new(),
        }
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes[id].as_ref().expect("a live node")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id].as_mut().expect("a live node")
    }

    fn alloc(&mut self, node: Node) -> NodeId {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id] = Some(node);
                id
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        }
    }

    fn mass(&self, id: NodeId) -> usize {
        match self.node(id) {
            Node::Leaf { mass, .. } | Node::Cut { mass, .. } => *mass,
        }
    }

    fn parent(&self, id: NodeId) -> Option<NodeId> {
        match self.node(id) {
            Node::Leaf { parent, .. } | Node::Cut { parent, .. } => *parent,
        }
    }

    fn set_parent(&mut self, id: NodeId, to: Option<NodeId>) {
        match self.node_mut(id) {
            Node::Leaf { parent, .. } | Node::Cut { parent, .. } => *parent = to,
        }
    }

    /// The bounding box of the points at or below `id`.
    fn bounds(&self, id: NodeId) -> (&[f64], &[f64]) {
        match self.node(id) {
            Node::Leaf { point, .. } => (point, point),
            Node::Cut { min, max, .. } => (min, max),
        }
    }

    fn total_mass(&self) -> usize {
        self.root.map_or(0, |r| self.mass(r))
    }

    /// Offers the point with key `key` to the sample: it enters the tree when the sample has
    /// room or its key is below the largest, which then leaves.
    fn offer(&mut self, point: &[f64], key: f64, sample_size: usize, rng: &mut fastrand::Rng) {
        if self.sample.len() >= sample_size {
            match self.sample.peek() {
                Some(top) if key < top.key => {
                    let evicted = self.sample.pop().expect("a full sample");
                    self.delete(&evicted.point);
                }
                _ => return,
            }
        }
        self.insert(point, rng);
        self.sample.push(Sampled {
            key,
            point: point.to_vec(),
        });
    }

    /// Inserts a point (the paper's insertion: a cut of the box grown by the point, made where
    /// a tree built afresh would make it).
    fn insert(&mut self, point: &[f64], rng: &mut fastrand::Rng) {
        let Some(mut at) = self.root else {
            self.root = Some(self.alloc(Node::Leaf {
                point: point.to_vec(),
                mass: 1,
                parent: None,
            }));
            return;
        };
        loop {
            if let Node::Leaf { point: p, .. } = self.node(at) {
                if p.as_slice() == point {
                    self.add_mass(at, 1);
                    return;
                }
            }
            let (min, max) = self.bounds(at);
            let grown: Vec<(f64, f64)> = min
                .iter()
                .zip(max)
                .zip(point)
                .map(|((lo, hi), x)| (lo.min(*x), hi.max(*x)))
                .collect();
            let total: f64 = grown.iter().map(|(lo, hi)| hi - lo).sum();
            // A random cut of the grown box: does it separate the point from the box?
            let mut r = rng.f64() * total;
            let mut cut = None;
            for (d, (lo, hi)) in grown.iter().enumerate() {
                let span = hi - lo;
                if r <= span && span > 0.0 {
                    cut = Some((d, lo + r));
                    break;
                }
                r -= span;
            }
            let separated = cut.filter(|(d, v)| {
                let (min, max) = self.bounds(at);
                (point[*d] <= *v && *v < min[*d]) || (max[*d] <= *v && *v < point[*d])
            });
            if let Some((dim, value)) = separated {
                let parent = self.parent(at);
                let leaf = self.alloc(Node::Leaf {
                    point: point.to_vec(),
                    mass: 1,
                    parent: None,
                });
                let (left, right) = if point[dim] <= value {
                    (leaf, at)
                } else {
                    (at, leaf)
                };
                let (mn, mx): (Vec<f64>, Vec<f64>) = grown.into_iter().unzip();
                let mass = self.mass(at) + 1;
                let cut = self.alloc(Node::Cut {
                    dim,
                    value,
                    left,
                    right,
                    parent,
                    min: mn,
                    max: mx,
                    mass,
                });
                self.set_parent(left, Some(cut));
                self.set_parent(right, Some(cut));
                match parent {
                    None => self.root = Some(cut),
                    Some(p) => {
                        self.replace_child(p, at, cut);
                        self.grow_ancestors(p, point);
                    }
                }
                return;
            }
            // No separation here: the point goes down the node's own cut.
            match self.child_towards(at, point) {
                Some(child) => at = child,
                // A leaf always separates from a different point (its box is the point).
                None => return,
            }
        }
    }

    /// The child of the cut `id` on the side of `point`; `None` at a leaf.
    fn child_towards(&self, id: NodeId, point: &[f64]) -> Option<NodeId> {
        match self.node(id) {
            Node::Cut {
                dim,
                value,
                left,
                right,
                ..
            } => Some(if point[*dim] <= *value { *left } else { *right }),
            Node::Leaf { .. } => None,
        }
    }

    /// The cut `parent`'s child `old` is `new` instead.
    fn replace_child(&mut self, parent: NodeId, old: NodeId, new: NodeId) {
        if let Node::Cut { left, right, .. } = self.node_mut(parent) {
            if *left == old {
                *left = new;
            } else {
                *right = new;
            }
        }
    }

    /// Adds `n` to the mass of `id` and its ancestors.
    fn add_mass(&mut self, id: NodeId, n: usize) {
        let mut at = Some(id);
        while let Some(i) = at {
            match self.node_mut(i) {
                Node::Leaf { mass, .. } | Node::Cut { mass, .. } => *mass += n,
            }
            at = self.parent(i);
        }
    }

    /// `id` and its ancestors hold one more point, `point`.
    fn grow_ancestors(&mut self, id: NodeId, point: &[f64]) {
        let mut at = Some(id);
        while let Some(i) = at {
            if let Node::Cut { min, max, mass, .. } = self.node_mut(i) {
                for ((lo, hi), x) in min.iter_mut().zip(max.iter_mut()).zip(point) {
                    *lo = lo.min(*x);
                    *hi = hi.max(*x);
                }
                *mass += 1;
            }
            at = self.parent(i);
        }
    }

    /// The leaf holding `point`, found by the cuts.
    fn find(&self, point: &[f64]) -> Option<NodeId> {
        let mut at = self.root?;
        while let Some(child) = self.child_towards(at, point) {
            at = child;
        }
        matches!(self.node(at), Node::Leaf { point: p, .. } if p.as_slice() == point).then_some(at)
    }

    /// Deletes one copy of a point of the sample (the paper's deletion: its leaf goes, and its
    /// sibling takes its parent's place).
    fn delete(&mut self, point: &[f64]) {
        let Some(leaf) = self.find(point) else {
            return;
        };
        if self.mass(leaf) > 1 {
            let mut at = Some(leaf);
            while let Some(i) = at {
                match self.node_mut(i) {
                    Node::Leaf { mass, .. } | Node::Cut { mass, .. } => *mass -= 1,
                }
                at = self.parent(i);
            }
            return;
        }
        let parent = self.parent(leaf);
        self.nodes[leaf] = None;
        self.free.push(leaf);
        let Some(parent) = parent else {
            self.root = None;
            return;
        };
        let (sibling, grand) = match self.node(parent) {
            Node::Cut {
                left,
                right,
                parent: grand,
                ..
            } => (if *left == leaf { *right } else { *left }, *grand),
            Node::Leaf { .. } => unreachable!("a parent is a cut"),
        };
        self.nodes[parent] = None;
        self.free.push(parent);
        self.set_parent(sibling, grand);
        match grand {
            None => self.root = Some(sibling),
            Some(g) => {
                self.replace_child(g, parent, sibling);
                // The ancestors lose a point: their boxes may shrink.
                let mut at = Some(g);
                while let Some(i) = at {
                    let (l, r) = match self.node(i) {
                        Node::Cut { left, right, .. } => (*left, *right),
                        Node::Leaf { .. } => unreachable!("an ancestor is a cut"),
                    };
                    let (lmin, lmax) = self.bounds(l);
                    let (rmin, rmax) = self.bounds(r);
                    let mn: Vec<f64> = lmin.iter().zip(rmin).map(|(a, b)| a.min(*b)).collect();
                    let mx: Vec<f64> = lmax.iter().zip(rmax).map(|(a, b)| a.max(*b)).collect();
                    if let Node::Cut { min, max, mass, .. } = self.node_mut(i) {
                        *min = mn;
                        *max = mx;
                        *mass -= 1;
                    }
                    at = self.parent(i);
                }
            }
        }
    }

    /// The point's score in this tree (see the module's notes).
    fn score(&self, point: &[f64]) -> f64 {
        let Some(root) = self.root else {
            return 0.0;
        };
        let total = self.total_mass();
        let mut at = root;
        let mut depth = 0usize;
        while let Some(child) = self.child_towards(at, point) {
            at = child;
            depth += 1;
        }
        let mut score = match self.node(at) {
            Node::Leaf { point: p, mass, .. } if p.as_slice() == point => {
                let damp = 1.0 - *mass as f64 / (2.0 * total as f64);
                damp / (depth as f64 + (1.0 + *mass as f64).log2())
            }
            _ => 1.0 / (depth as f64 + 1.0),
        };
        // Up the path: at each node, the chance that a cut of its box grown by the point would
        // have cut the point off there.
        let mut up = self.parent(at);
        while let Some(node) = up {
            depth -= 1;
            let (min, max) = self.bounds(node);
            let (mut old, mut grown) = (0.0, 0.0);
            for ((lo, hi), x) in min.iter().zip(max).zip(point) {
                old += hi - lo;
                grown += hi.max(*x) - lo.min(*x);
            }
            let p = if grown > 0.0 {
                (grown - old) / grown
            } else {
                0.0
            };
            score = (1.0 - p) * score + p / (depth as f64 + 1.0);
            up = self.parent(node);
        }
        score * (1.0 + total as f64).log2()
    }
}

/// A random cut forest over a stream of points.
#[derive(Debug, Clone)]
pub(crate) struct Forest {
    trees: Vec<Tree>,
    sample_size: usize,
    /// 1 / time decay.
    decay: f64,
    shingle: usize,
    recent: std::collections::VecDeque<Vec<f64>>,
    seen: u64,
    rng: fastrand::Rng,
}

impl Forest {
    /// A forest of `trees` trees of `sample_size` points, forgetting over about `time_decay`
    /// points, scoring shingles of `shingle` consecutive points.
    pub(crate) fn new(trees: usize, sample_size: usize, time_decay: f64, shingle: usize) -> Self {
        Self {
            trees: (0..trees).map(|_| Tree::new()).collect(),
            sample_size,
            decay: 1.0 / time_decay,
            shingle: shingle.max(1),
            recent: std::collections::VecDeque::new(),
            seen: 0,
            // Fixed: the same stream gives the same scores.
            rng: fastrand::Rng::with_seed(0x5eed_f0e5),
        }
    }

    /// The point's anomaly score against the forest, after which it joins the forest.
    pub(crate) fn score_and_update(&mut self, point: &[f64]) -> f64 {
        self.recent.push_back(point.to_vec());
        if self.recent.len() > self.shingle {
            self.recent.pop_front();
        }
        if self.recent.len() < self.shingle {
            return 0.0;
        }
        let shingled: Vec<f64> = self.recent.iter().flatten().copied().collect();
        let warm = self.seen >= (self.sample_size as u64 / 4).max(1);
        let score = if warm {
            self.trees.iter().map(|t| t.score(&shingled)).sum::<f64>() / self.trees.len() as f64
        } else {
            0.0
        };
        let t = self.seen as f64;
        for i in 0..self.trees.len() {
            let u = self.rng.f64().max(f64::MIN_POSITIVE);
            let key = (-u.ln()).ln() - t * self.decay;
            let (trees, rng) = (&mut self.trees, &mut self.rng);
            trees[i].offer(&shingled, key, self.sample_size, rng);
        }
        self.seen += 1;
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a tree's structure: parents, masses and boxes agree with its leaves.
    fn check(t: &Tree) -> usize {
        fn walk(t: &Tree, id: NodeId, parent: Option<NodeId>) -> (usize, Vec<f64>, Vec<f64>) {
            assert_eq!(t.parent(id), parent);
            match t.node(id) {
                Node::Leaf { point, mass, .. } => (*mass, point.clone(), point.clone()),
                Node::Cut {
                    left,
                    right,
                    min,
                    max,
                    mass,
                    dim,
                    value,
                    ..
                } => {
                    let (lm, lmin, lmax) = walk(t, *left, Some(id));
                    let (rm, rmin, rmax) = walk(t, *right, Some(id));
                    assert!(
                        lmax[*dim] <= *value && *value < rmin[*dim],
                        "the cut separates"
                    );
                    assert_eq!(*mass, lm + rm);
                    let mn: Vec<f64> = lmin.iter().zip(&rmin).map(|(a, b)| a.min(*b)).collect();
                    let mx: Vec<f64> = lmax.iter().zip(&rmax).map(|(a, b)| a.max(*b)).collect();
                    assert_eq!(min, &mn);
                    assert_eq!(max, &mx);
                    (*mass, mn, mx)
                }
            }
        }
        t.root.map_or(0, |r| walk(t, r, None).0)
    }

    #[test]
    fn insertions_and_deletions_keep_the_tree_consistent() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut t = Tree::new();
        let mut points = Vec::new();
        for i in 0..500 {
            let p = vec![rng.f64() * 10.0, (i % 7) as f64];
            t.insert(&p, &mut rng);
            points.push(p);
            if i % 3 == 0 {
                let gone = points.remove(rng.usize(..points.len()));
                t.delete(&gone);
            }
            assert_eq!(check(&t), points.len());
        }
        for p in points.drain(..) {
            t.delete(&p);
        }
        assert!(t.root.is_none());
    }

    #[test]
    fn an_outlier_scores_far_above_the_points_like_those_seen() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut f = Forest::new(50, 64, 100_000.0, 1);
        let mut normal = Vec::new();
        for i in 0..2_000 {
            let p = [10.0 + rng.f64(), 20.0 + rng.f64()];
            let s = f.score_and_update(&p);
            if i >= 500 {
                normal.push(s);
            }
        }
        let mean = normal.iter().sum::<f64>() / normal.len() as f64;
        let outlier = f.score_and_update(&[30.0, -5.0]);
        assert!(
            mean > 0.5 && mean < 2.0,
            "ordinary points score about 1: {mean}"
        );
        assert!(outlier > 2.5 * mean, "outlier {outlier} vs ordinary {mean}");
        // The same stream gives the same scores.
        let mut again = Forest::new(50, 64, 100_000.0, 1);
        let mut rng = fastrand::Rng::with_seed(3);
        let first: Vec<f64> = (0..300)
            .map(|_| again.score_and_update(&[10.0 + rng.f64(), 20.0 + rng.f64()]))
            .collect();
        let mut other = Forest::new(50, 64, 100_000.0, 1);
        let mut rng = fastrand::Rng::with_seed(3);
        let second: Vec<f64> = (0..300)
            .map(|_| other.score_and_update(&[10.0 + rng.f64(), 20.0 + rng.f64()]))
            .collect();
        assert_eq!(first, second);
    }

    #[test]
    fn shingles_score_a_break_in_a_pattern() {
        let mut f = Forest::new(50, 128, 100_000.0, 4);
        let mut rng = fastrand::Rng::with_seed(11);
        let mut last = 0.0_f64;
        let mut ordinary = Vec::new();
        for i in 0..3_000 {
            // A sine wave that stops at 2,900 for ten points: each value on its own is one
            // the wave takes, only the sequence is new.
            let v = if (2_900..2_910).contains(&i) {
                0.0
            } else {
                (std::f64::consts::TAU * i as f64 / 20.0).sin() + rng.f64() * 0.02
            };
            let s = f.score_and_update(&[v]);
            if (1_000..2_900).contains(&i) {
                ordinary.push(s);
            }
            if (2_900..2_914).contains(&i) {
                last = f64::max(last, s);
            }
        }
        // Each value is one the wave takes: only the sequence is new, so the score rises less
        // than for a value never seen, but above any the wave itself scored.
        ordinary.sort_by(f64::total_cmp);
        let highest = ordinary[ordinary.len() - 1];
        let mean = ordinary.iter().sum::<f64>() / ordinary.len() as f64;
        assert!(
            last > highest && last > 1.25 * mean,
            "{last} vs {highest}, {mean}"
        );
    }
}

/// `random_cut_forest(name, trees, sample_size, time_decay, shingle, value, …)`: the anomaly
/// score of each row's numeric values (the other values are left out) against a forest that
/// the call named `name` keeps across batches; a row with a NULL number scores NULL and does not
/// join the forest. KDA's `RANDOM_CUT_FOREST` table function is translated to it.
pub(crate) fn function() -> datafusion::logical_expr::ScalarUDF {
    datafusion::logical_expr::ScalarUDF::from(RandomCutForest {
        signature: datafusion::logical_expr::Signature::variadic_any(
            // Stateful: never folded, never evaluated twice for one row.
            datafusion::logical_expr::Volatility::Volatile,
        ),
        forests: std::sync::Mutex::new(std::collections::HashMap::new()),
    })
}

#[derive(Debug)]
struct RandomCutForest {
    signature: datafusion::logical_expr::Signature,
    forests: std::sync::Mutex<std::collections::HashMap<String, Forest>>,
}

impl PartialEq for RandomCutForest {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RandomCutForest {}

impl std::hash::Hash for RandomCutForest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "random_cut_forest".hash(state);
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for RandomCutForest {
    fn name(&self) -> &str {
        "random_cut_forest"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _: &[arrow::datatypes::DataType],
    ) -> datafusion::error::Result<arrow::datatypes::DataType> {
        Ok(arrow::datatypes::DataType::Float64)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        use arrow::array::{Array, AsArray};
        use datafusion::common::ScalarValue;
        let n = args.number_rows;
        if args.args.len() < 6 {
            return datafusion::common::exec_err!(
                "random_cut_forest(name, trees, sample_size, time_decay, shingle, value, …) \
                 needs at least one value"
            );
        }
        let scalar = |i: usize| match args.args.get(i) {
            Some(datafusion::logical_expr::ColumnarValue::Scalar(v)) => Some(v.clone()),
            _ => None,
        };
        let number = |i: usize| -> datafusion::error::Result<f64> {
            match scalar(i).map(|v| v.cast_to(&arrow::datatypes::DataType::Float64)) {
                Some(Ok(ScalarValue::Float64(Some(v)))) => Ok(v),
                _ => datafusion::common::exec_err!(
                    "RANDOM_CUT_FOREST: its parameters are numbers given as literals"
                ),
            }
        };
        let Some(ScalarValue::Utf8(Some(name))) = scalar(0) else {
            return datafusion::common::exec_err!("RANDOM_CUT_FOREST: no forest name");
        };
        let (trees, sample, decay, shingle) = (number(1)?, number(2)?, number(3)?, number(4)?);
        // The numeric values, as f64 columns.
        let mut values = Vec::new();
        for a in &args.args[5..] {
            let a = a.to_array(n)?;
            if a.data_type().is_numeric() {
                values.push(arrow::compute::cast(
                    &a,
                    &arrow::datatypes::DataType::Float64,
                )?);
            }
        }
        if values.is_empty() {
            return datafusion::common::exec_err!(
                "RANDOM_CUT_FOREST: the cursor's query selects no numeric column"
            );
        }
        let mut forests = self
            .forests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let forest = forests.entry(name).or_insert_with(|| {
            Forest::new(trees as usize, sample as usize, decay, shingle as usize)
        });
        let columns: Vec<&arrow::array::Float64Array> =
            values.iter().map(|v| v.as_primitive()).collect();
        let mut point = vec![0.0; columns.len()];
        let scores: arrow::array::Float64Array = (0..n)
            .map(|i| {
                if columns.iter().any(|c| c.is_null(i)) {
                    return None;
                }
                for (p, c) in point.iter_mut().zip(&columns) {
                    *p = c.value(i);
                }
                Some(forest.score_and_update(&point))
            })
            .collect();
        Ok(datafusion::logical_expr::ColumnarValue::Array(
            std::sync::Arc::new(scores),
        ))
    }
}
