# Cluster mode: kind + Istio + the suite, from nothing to the journeys.
# Included by the Makefile (include mk/cluster.mk). docs/cluster.md walks
# through it; the shell logic is in scripts/cluster/*.sh.
#
#   make cluster-up istio addons images kind-load deploy verify-cluster
#   (ambient data plane: AMBIENT=1 on istio and deploy, docs/ambient.md)
#   make kiali | jaeger | grafana      (port-forwards)
#   make down
#
# Pinned versions (change together):
#   Istio 1.28.3 -> Gateway API v1.4.0 (the version in Istio 1.28's go.mod);
#   Kubernetes 1.33 node (Istio 1.28 supports 1.29-1.34; >= 1.33 gives native
#   sidecars); the addons in observability/kustomization.yaml use the same
#   Istio tag in their URLs.

KIND_CLUSTER        ?= mesh-shop
KIND_NODE_IMAGE     ?= kindest/node:v1.33.1
ISTIO_VERSION       ?= 1.28.3
GATEWAY_API_VERSION ?= v1.4.0
IMAGE_REPO          ?= mesh-shop
IMAGE_TAG           ?= dev
GATEWAY_HOST        ?= sit-gateway.tcex.com.vn
GATEWAY_ADDR        ?= 127.0.0.1:8443
GATEWAY_HTTP_ADDR   ?= 127.0.0.1:8880
CERT_DIR            ?= gateway/certs
# AGENTS=1: also deploy the AgentSync clients of seed 004 (overlay kind-agents).
AGENTS              ?=
# AMBIENT=1: Istio's ambient data plane instead of sidecars (docs/ambient.md):
# `make istio AMBIENT=1` installs the ambient profile, `make deploy AMBIENT=1`
# applies overlay ambient (ambient-agents with AGENTS=1).
AMBIENT             ?=
OVERLAY             ?= $(if $(AMBIENT),ambient,kind)$(if $(AGENTS),-agents,)

export KIND_CLUSTER KIND_NODE_IMAGE ISTIO_VERSION GATEWAY_API_VERSION IMAGE_REPO IMAGE_TAG \
       GATEWAY_HOST GATEWAY_ADDR GATEWAY_HTTP_ADDR CERT_DIR OVERLAY AMBIENT

.PHONY: cluster-up istio addons images kind-load deploy verify-cluster kiali jaeger grafana down cluster-all

cluster-up: ## kind cluster, 127.0.0.1:8443 -> gateway HTTPS (NodePort 30443)
	scripts/cluster/cluster-up.sh

istio: ## Gateway API CRDs + istioctl install (pinned Istio, minimal profile; AMBIENT=1: ambient profile)
	scripts/cluster/istio.sh

addons: ## Prometheus, Jaeger, Kiali (tracing on), Grafana (+ suite dashboard, alerts)
	scripts/cluster/addons.sh

images: ## docker images of the five services (mesh-shop/<service>:dev)
	scripts/cluster/images.sh

kind-load: ## load the images into the kind node
	scripts/cluster/kind-load.sh

deploy: ## certificates, kubectl apply -k manifests/overlays/kind (AGENTS=1: kind-agents; AMBIENT=1: ambient[-agents]), wait
	scripts/cluster/deploy.sh

verify-cluster: ## the journeys through the gateway: grpcurl list, GetProduct, premium, 80/20, streams, order, frontend
	scripts/cluster/verify.sh

kiali: ## port-forward Kiali to http://localhost:20001/kiali
	scripts/cluster/port-forward.sh kiali

jaeger: ## port-forward Jaeger to http://localhost:16686/jaeger
	scripts/cluster/port-forward.sh jaeger

grafana: ## port-forward Grafana to http://localhost:3000
	scripts/cluster/port-forward.sh grafana

down: ## delete the kind cluster
	scripts/cluster/down.sh

cluster-all: cluster-up istio addons images kind-load deploy verify-cluster ## everything, in order
