# Ferry's images, built offline (`make images`): the base is a Debian
# bookworm rootfs made by debootstrap and imported locally
# (hack/images/base.sh), never pulled from a registry.
#   build     compiles ferry-operator, ferry-agent and ferry-runc, linking
#             the pinned static BLAKE3 library staged from make setup
#   operator  ferry-operator; non-root, no capabilities needed
#   agent     ferry-agent + ferry-runc + the pinned CRIU and runc; runs
#             privileged on the node (see deploy/ for why)
ARG BASE=ferry-base:bookworm

FROM ${BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake ninja-build pkg-config \
      libcpprest-dev libyaml-cpp-dev prometheus-cpp-dev nlohmann-json3-dev libssl-dev \
      libboost-system-dev libboost1.74-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY .cache/image-context/blake3 /opt/blake3
COPY CMakeLists.txt ./
COPY cmake cmake
COPY lib lib
COPY operator operator
COPY node-agent node-agent
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFERRY_BUILD_TESTS=OFF \
      -DFERRY_BLAKE3_PREFIX=/opt/blake3 \
 && cmake --build /build --target ferry-operator ferry-agent ferry-runc

FROM ${BASE} AS runtime-libs
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcpprest2.10 libyaml-cpp0.7 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libssl3 libboost-system1.74.0 \
 && rm -rf /var/lib/apt/lists/*

FROM runtime-libs AS operator
COPY --from=build /build/operator/ferry-operator /usr/local/bin/ferry-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ferry-operator"]

FROM runtime-libs AS agent
# CRIU's runtime libraries (it was built on bookworm against these), the
# netfilter tools its network lock uses, and iproute2 for diagnostics.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libprotobuf-c1 libnl-3-200 libnl-route-3-200 \
      libnet1 libbsd0 libgnutls30 libnftables1 libseccomp2 iptables nftables iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY .cache/image-context/criu /opt/ferry/criu
COPY .cache/image-context/runc /opt/ferry/bin/runc
RUN ln -s /opt/ferry/criu/sbin/criu /usr/local/sbin/criu && /usr/local/sbin/criu --version
COPY --from=build /build/node-agent/ferry-agent /usr/local/bin/ferry-agent
COPY --from=build /build/node-agent/runtime/ferry-runc /opt/ferry/bin/ferry-runc
ENTRYPOINT ["/usr/local/bin/ferry-agent"]
