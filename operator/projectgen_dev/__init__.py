"""Development tools, kept out of the operator image: the local control plane (etcd +
kube-apiserver), loopback stand-ins for what cannot run here (GitHub, GitLab), a real git
smart-HTTP server, a kstatus reader, and the demo.

Used by the tests, the benchmarks and `make demo`; never by the operator itself: nothing in
`projectgen` imports this package, and the image's build context leaves it out (.dockerignore).
Run it as `python -m projectgen_dev demo|controlplane`.
"""
