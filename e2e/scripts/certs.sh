#!/usr/bin/env bash
# Creates the test cluster's PKI under $STATE/pki once: a CA, the apiserver's
# serving certificate, client certificates and the service-account key pair.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

pki=$STATE/pki
[[ -f $pki/done ]] && exit 0
rm -rf "$pki" && mkdir -p "$pki" && cd "$pki"

openssl genrsa -out ca.key 2048 2>/dev/null
openssl req -x509 -new -key ca.key -days 3650 -subj "/CN=porthole-test-ca" -out ca.crt 2>/dev/null

client_cert() { # name CN O
  openssl genrsa -out "$1.key" 2048 2>/dev/null
  openssl req -new -key "$1.key" -subj "/CN=$2${3:+/O=$3}" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile <(printf 'extendedKeyUsage=clientAuth\n') -out "$1.crt" 2>/dev/null
}

openssl genrsa -out apiserver.key 2048 2>/dev/null
openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr 2>/dev/null
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out apiserver.crt \
  -extfile <(printf 'extendedKeyUsage=serverAuth\nsubjectAltName=IP:%s,IP:%s,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' \
    "$NODE_IP" "$KUBERNETES_SERVICE_IP") 2>/dev/null

client_cert admin admin system:masters
client_cert controller-manager system:kube-controller-manager
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
touch done
