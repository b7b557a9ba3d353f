//! The command lines of the control plane's components: pure functions of
//! where things are, so what each component is started with can be read
//! (and tested) in one place.

use std::path::{Path, PathBuf};

/// Where a control plane keeps its files and listens.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The control plane's directory (certificates, etcd data, logs).
    pub dir: PathBuf,
    /// etcd's client port.
    pub etcd_client_port: u16,
    /// etcd's peer port (a one-member cluster still listens on one).
    pub etcd_peer_port: u16,
    /// kube-apiserver's secure port.
    pub apiserver_port: u16,
}

/// The service network: kube-apiserver's `--service-cluster-ip-range`.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
/// The pod network kwok hands out addresses from (apart from the services').
pub const POD_CIDR: &str = "10.244.0.0/16";
/// The fake node's address.
pub const NODE_IP: &str = "10.244.0.1";
/// The service-account token issuer (and default audience).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The annotation that hands a Node to kwok.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// The controllers kube-controller-manager runs: what workloads, namespaces,
/// service accounts and owner references need on a cluster. Certificate
/// signing and approval are left out: capstan's signers are judged alone.
pub const CONTROLLERS: &[&str] = &[
    "deployment-controller",
    "replicaset-controller",
    "daemonset-controller",
    "statefulset-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "root-ca-certificate-publisher-controller",
    // Lifts the not-ready taint admission puts on a new Node once kwok
    // reports it Ready; without it nothing schedules.
    "node-lifecycle-controller",
];

impl Layout {
    /// A file in the control plane's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The URL clients reach kube-apiserver on.
    pub fn apiserver_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// etcd's client URL.
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_client_port)
    }
}

/// etcd: one member, data under the control plane's directory, no fsync
/// (the data is thrown away with the control plane).
pub fn etcd(l: &Layout) -> Vec<String> {
    let peer = format!("http://127.0.0.1:{}", l.etcd_peer_port);
    vec![
        "--name=capstan".into(),
        format!("--data-dir={}", l.file("etcd").display()),
        format!("--listen-client-urls={}", l.etcd_url()),
        format!("--advertise-client-urls={}", l.etcd_url()),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=capstan={peer}"),
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]
}

/// kube-apiserver: on 127.0.0.1 with RBAC and Node authorization, the
/// admin's static token, service
/// accounts signed with the control plane's key, and an audit log of every
/// request at Metadata level (who did what to which object), then `extra`.
pub fn apiserver(l: &Layout, extra: &[String]) -> Vec<String> {
    let f = |n: &str| l.file(n).display().to_string();
    let mut args = vec![
        format!("--etcd-servers={}", l.etcd_url()),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={}", l.apiserver_port),
        format!("--tls-cert-file={}", f("apiserver.crt")),
        format!("--tls-private-key-file={}", f("apiserver.key")),
        format!("--token-auth-file={}", f("tokens.csv")),
        "--authorization-mode=Node,RBAC".into(),
        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
        format!("--service-account-key-file={}", f("sa.pub")),
        format!("--service-account-signing-key-file={}", f("sa.key")),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        format!("--audit-policy-file={}", f("audit-policy.yaml")),
        format!("--audit-log-path={}", f("audit.log")),
        "--audit-log-format=json".into(),
        "--audit-log-mode=blocking".into(),
        format!("--cert-dir={}", f("apiserver-certs")),
    ];
    args.extend_from_slice(extra);
    args
}

/// The audit policy: every request once it completes, at Metadata level
/// (user, verb, resource, name, code; never a body, so no Secret data).
pub const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
";

/// kube-controller-manager with the controllers in [`CONTROLLERS`], as the
/// admin, serving nothing.
pub fn controller_manager(l: &Layout, kubeconfig: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".into(),
        "--secure-port=0".into(),
        format!("--controllers={}", CONTROLLERS.join(",")),
        format!(
            "--service-account-private-key-file={}",
            l.file("sa.key").display()
        ),
        format!("--root-ca-file={}", l.file("serving-ca.crt").display()),
        "--use-service-account-credentials=false".into(),
    ]
}

/// kube-scheduler, as the admin, serving nothing.
pub fn scheduler(kubeconfig: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".into(),
        "--secure-port=0".into(),
    ]
}

/// kwok, managing only the Nodes annotated [`KWOK_NODE_ANNOTATION`]`=fake`,
/// with the stock stages in `stages` (node heartbeat, pods that become
/// Ready, finish and go away).
pub fn kwok(kubeconfig: &Path, stages: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--manage-all-nodes=false".into(),
        format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
        format!("--cidr={POD_CIDR}"),
        format!("--node-ip={NODE_IP}"),
        "--node-lease-duration-seconds=40".into(),
        format!("--config={}", stages.display()),
        "--server-address=".into(),
    ]
}

/// The static token file: the admin, in `system:masters`.
pub fn tokens_csv(admin_token: &str) -> String {
    format!("{admin_token},admin,admin-uid,\"system:masters\"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            dir: PathBuf::from("/cp"),
            etcd_client_port: 1,
            etcd_peer_port: 2,
            apiserver_port: 3,
        }
    }

    #[test]
    fn etcd_advertises_what_it_listens_on() {
        let args = etcd(&layout());
        assert!(args.contains(&"--listen-client-urls=http://127.0.0.1:1".to_owned()));
        assert!(args.contains(&"--advertise-client-urls=http://127.0.0.1:1".to_owned()));
        assert!(args.contains(&"--initial-cluster=capstan=http://127.0.0.1:2".to_owned()));
        assert!(args.contains(&"--data-dir=/cp/etcd".to_owned()));
    }

    #[test]
    fn apiserver_uses_rbac_on_loopback_with_extra_flags_last() {
        let args = apiserver(&layout(), &["--max-requests-inflight=1".to_owned()]);
        assert!(args.contains(&"--authorization-mode=Node,RBAC".to_owned()));
        assert!(args.contains(&"--etcd-servers=http://127.0.0.1:1".to_owned()));
        assert!(args.contains(&"--bind-address=127.0.0.1".to_owned()));
        assert_eq!(
            args.last().map(String::as_str),
            Some("--max-requests-inflight=1")
        );
        assert_eq!(layout().apiserver_url(), "https://127.0.0.1:3");
    }

    #[test]
    fn kwok_pods_do_not_take_service_addresses() {
        assert_ne!(POD_CIDR, SERVICE_CIDR);
        assert!(kwok(Path::new("/k"), Path::new("/s")).contains(&format!("--cidr={POD_CIDR}")));
    }

    #[test]
    fn the_admin_is_a_master() {
        assert_eq!(tokens_csv("t"), "t,admin,admin-uid,\"system:masters\"\n");
    }
}
