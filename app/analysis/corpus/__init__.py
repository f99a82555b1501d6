"""The labelled-traffic corpus the default model is built from.

``scenarios`` crafts traffic with scapy (timing patterns real tools cannot produce in seconds:
beaconing, slow exfiltration, tunnelling); ``tools`` records real programs on loopback with
tcpdump (nmap, hping3, ssh, curl, dig); ``build`` turns every capture into flows through the
real agent (``netmon agent replay``), labels them by scenario and trains the model.
"""
