# Sourced by the boot benchmarks: an etcd on loopback serving etcd-1's
# member certificate from a build, as the cluster's etcd-1 would, so the
# built nodes' client certificates are accepted.

# The node config embedded in an Ignition config.
cfg_of() { jq -r '.storage.files[] | select(.path=="/etc/node-agent/config.json") | .contents.source' "$1" | sed 's/^data:;base64,//' | base64 -d; }

# start_etcd BUILD_DIR OUT_DIR: sets $tls (ca.crt, etcd.crt, etcd.key),
# $port and $etcd_pid; returns once etcd answers.
start_etcd() {
  local build=$1 out=$2
  tls="$out/solo-tls"; rm -rf "$tls" "$out/solo-etcd"; mkdir -p "$tls"; chmod 700 "$tls"
  cfg_of "$build/etcd-1/etcd-1.ign" >"$tls/etcd-1.json"
  jq -r .etcd.tls.ca "$tls/etcd-1.json" >"$tls/ca.crt"
  jq -r .etcd.member.tls.cert "$tls/etcd-1.json" >"$tls/etcd.crt"
  (umask 077; jq -r .etcd.member.tls.key "$tls/etcd-1.json" >"$tls/etcd.key")
  port=$((30000 + RANDOM % 20000))
  etcd --name solo --data-dir "$out/solo-etcd" --listen-client-urls "https://127.0.0.1:$port" \
    --advertise-client-urls "https://127.0.0.1:$port" --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" --initial-cluster "solo=http://127.0.0.1:$((port + 1))" \
    --trusted-ca-file "$tls/ca.crt" --cert-file "$tls/etcd.crt" --key-file "$tls/etcd.key" --client-cert-auth \
    --enable-v2=false >"$out/solo-etcd.log" 2>&1 &
  etcd_pid=$!
  local i
  for i in $(seq 50); do
    ETCDCTL_API=3 etcdctl --endpoints "https://127.0.0.1:$port" --cacert "$tls/ca.crt" --cert "$tls/etcd.crt" \
      --key "$tls/etcd.key" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  kill "$etcd_pid" 2>/dev/null || true
  echo "etcd on 127.0.0.1:$port did not answer (see $out/solo-etcd.log)" >&2
  return 1
}
