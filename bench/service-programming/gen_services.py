#!/usr/bin/env python3
"""Writes N Services + EndpointSlices (Kubernetes shape, JSON List) for
skiff-proxy --from-file, and the same services as kube-proxy-shaped iptables
rules (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* with DNAT) for
iptables-restore. Service `target` gets the live backends 10.0.0.11/12:8080;
the others get addresses that nobody connects to.

usage: gen_services.py N SKIFF_JSON IPTABLES_RULES [--target I] [--change]
       [--partial-rules FILE]   (the rules for the changed service only, for
                                 iptables-restore --noflush)
"""
import argparse
import ipaddress
import json

p = argparse.ArgumentParser()
p.add_argument("n", type=int)
p.add_argument("skiff")
p.add_argument("rules")
p.add_argument("--target", type=int, default=0)
p.add_argument("--change", action="store_true", help="move one endpoint of service 1")
p.add_argument("--partial-rules")
a = p.parse_args()

base = int(ipaddress.IPv4Address("10.96.0.1"))
fake = int(ipaddress.IPv4Address("10.128.0.1"))


def vip(i):
    return str(ipaddress.IPv4Address(base + i))


def endpoints(i):
    if i == a.target:
        return ["10.0.0.11", "10.0.0.12"]
    eps = [str(ipaddress.IPv4Address(fake + 2 * i)), str(ipaddress.IPv4Address(fake + 2 * i + 1))]
    if a.change and i == 1:
        eps[1] = "10.200.0.1"
    return eps


items = []
for i in range(a.n):
    name = "svc-%d" % i
    items.append({"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": name, "namespace": "bench"},
                  "spec": {"clusterIP": vip(i), "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    items.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                  "metadata": {"name": name + "-1", "namespace": "bench",
                               "labels": {"kubernetes.io/service-name": name}},
                  "addressType": "IPv4",
                  "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                  "endpoints": [{"addresses": [e], "conditions": {"ready": True}, "nodeName": "bench"}
                                for e in endpoints(i)]})
with open(a.skiff, "w") as f:
    json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f)


def chains(i):
    svc = "KUBE-SVC-%016X" % i
    eps = endpoints(i)
    seps = ["KUBE-SEP-%016X" % (i * 4 + k + (2 if a.change and i == 1 and k == 1 else 0)) for k in range(len(eps))]
    decl = [":%s - [0:0]" % svc] + [":%s - [0:0]" % s for s in seps]
    rules = []
    for k, (s, e) in enumerate(zip(seps, eps)):
        if k < len(eps) - 1:
            rules.append("-A %s -m comment --comment \"bench/svc-%d:http\" -m statistic --mode random "
                         "--probability %.11f -j %s" % (svc, i, 1.0 / (len(eps) - k), s))
        else:
            rules.append("-A %s -m comment --comment \"bench/svc-%d:http\" -j %s" % (svc, i, s))
        rules.append("-A %s -s %s/32 -m comment --comment \"bench/svc-%d:http\" -j KUBE-MARK-MASQ" % (s, e, i))
        rules.append("-A %s -p tcp -m comment --comment \"bench/svc-%d:http\" -m tcp -j DNAT "
                     "--to-destination %s:8080" % (s, i, e))
    return svc, decl, rules


with open(a.rules, "w") as f:
    decls, body, services = [], [], []
    for i in range(a.n):
        svc, d, r = chains(i)
        decls += d
        body += r
        services.append("-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"bench/svc-%d:http cluster IP\" "
                        "-m tcp --dport 80 -j %s" % (vip(i), i, svc))
    f.write("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
    f.write(":KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n")
    f.write("\n".join(decls) + "\n")
    f.write("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
    f.write("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
    f.write("-A POSTROUTING -j KUBE-POSTROUTING\n")
    f.write("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n")
    f.write("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n")
    f.write("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n")
    f.write("-A KUBE-POSTROUTING -j MASQUERADE --random-fully\n")
    f.write("\n".join(services) + "\n")
    f.write("\n".join(body) + "\nCOMMIT\n")

if a.partial_rules:
    svc, d, r = chains(1)
    with open(a.partial_rules, "w") as f:
        f.write("*nat\n" + "\n".join(d) + "\n" + "\n".join(r) + "\nCOMMIT\n")
