//! Label selectors as Kubernetes matches them: every `matchLabels` pair and
//! every `matchExpressions` requirement must hold; an empty selector
//! matches everything.

use crate::model::{LabelSelector, Labels, Operator, Requirement};

impl LabelSelector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            // NotIn holds for a pod without the key, as in Kubernetes.
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: vec![Requirement {
                key: key.into(),
                operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn operators() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let bare = labels(&[]);
        assert!(LabelSelector::default().matches(&web) && LabelSelector::default().matches(&bare));
        assert!(req("app", Operator::In, &["web", "api"]).matches(&web));
        assert!(
            !req("app", Operator::In, &["api"]).matches(&web) && !req("app", Operator::In, &["web"]).matches(&bare)
        );
        assert!(!req("app", Operator::NotIn, &["web"]).matches(&web));
        assert!(req("app", Operator::NotIn, &["web"]).matches(&bare), "NotIn holds without the key");
        assert!(req("tier", Operator::Exists, &[]).matches(&web) && !req("tier", Operator::Exists, &[]).matches(&bare));
        assert!(req("x", Operator::DoesNotExist, &[]).matches(&web));
        let both = LabelSelector { match_labels: labels(&[("app", "web")]), ..req("tier", Operator::In, &["back"]) };
        assert!(!both.matches(&web), "matchLabels and matchExpressions must both hold");
    }
}
