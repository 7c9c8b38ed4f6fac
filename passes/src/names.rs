//! Fresh names for added nodes and tensors that can never collide with a name already in the
//! model. Subgraphs see their parents' names, so the set covers every graph of the model.

use crate::graph::for_each_graph;
use crate::onnx::ModelProto;
use std::collections::HashSet;

pub struct NameAllocator {
    taken: HashSet<String>,
}

impl NameAllocator {
    /// Collects every node name and every tensor name (node inputs and outputs, initializers,
    /// graph inputs, outputs and value_info) of every graph in the model.
    pub fn for_model(model: &ModelProto) -> Self {
        let mut taken = HashSet::new();
        for_each_graph(model, |_, graph| {
            let values = graph.input.iter().chain(&graph.output).chain(&graph.value_info);
            taken.extend(values.map(|v| v.name().to_owned()));
            taken.extend(graph.initializer.iter().map(|t| t.name().to_owned()));
            for node in &graph.node {
                taken.insert(node.name().to_owned());
                taken.extend(node.input.iter().cloned());
                taken.extend(node.output.iter().cloned());
            }
        });
        taken.remove("");
        NameAllocator { taken }
    }

    /// `base` itself if it is free, else `base_1`, `base_2`, ... The name is reserved.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut candidate = base.to_owned();
        let mut suffix = 0usize;
        while self.taken.contains(&candidate) {
            suffix += 1;
            candidate = format!("{base}_{suffix}");
        }
        self.taken.insert(candidate.clone());
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{GraphProto, NodeProto};

    #[test]
    fn fresh_names_avoid_existing_and_each_other() {
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    name: Some("relu/fitact/bound".into()),
                    output: vec!["relu/fitact/bound_1".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut names = NameAllocator::for_model(&model);
        assert_eq!(names.fresh("relu/fitact/bound"), "relu/fitact/bound_2");
        assert_eq!(names.fresh("relu/fitact/bound"), "relu/fitact/bound_3");
        assert_eq!(names.fresh("other"), "other");
    }
}
