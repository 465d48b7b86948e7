"""Why a request was copied: the reason names (a JSON and metrics contract) and the
classification of late copies by the kernel call stack of skb_copy_ubufs."""

from __future__ import annotations

# Callers of skb_copy_ubufs (docs/reasons.md, "Copied late"): the innermost frame of
# the stack that names one of these functions gives the reason.
#
# `bpf_redirect` is mostly not found here: the redirect itself does not copy (MSG_ZEROCOPY and
# io_uring skbs carry SKBFL_DONT_ORPHAN, and dev_forward_skb uses skb_orphan_frags), the copy
# comes later where the skb lands, on another stack (__netif_receive_skb_core after
# bpf_redirect(..., BPF_F_INGRESS), tun_net_xmit after an egress redirect). The probes remember
# the skbs skb_do_redirect redirected (probes/bpf_redirect.bpf.c) and report a later copy of one
# as `bpf_redirect` themselves, whatever the copying frame: the BPF program chose the path that
# copies. The frames below catch a copy inside the redirect where that probe is missing.
_LATE_COPY_CALLERS = {
    # skb_segment's own program (zc_kernel): segmentation in software without scatter-gather
    # copies the payload, and the kernel still reports zero-copy (a copy site, not a verdict)
    "skb_segment": "software_gso",
    "__skb_gso_segment": "software_gso",
    # __pskb_pull_tail's program (zc_kernel) sees a zerocopy skb linearized whole; its caller, or
    # skb_checksum_help's, names why: a checksum in software before encryption (below), or
    # validate_xmit_skb linearizing for a device without scatter-gather (a tc redirect's target:
    # test_paths.py tc-mirred-nosg, 6.12 and 6.1)
    "validate_xmit_skb": "no_sg",
    "encrypt_packet": "software_crypto",  # WireGuard, before it encrypts
    "wg_packet_encrypt_worker": "software_crypto",
    # IPsec (xfrm) without ESP offload checksums a CHECKSUM_PARTIAL skb (TCP over ESP) before
    # the transform encrypts it: skb_checksum_help <- xfrm_output (6.1, 6.12: test_paths.py)
    "xfrm_output": "software_crypto",
    "esp_output_tail": "software_crypto",
    "esp6_output_tail": "software_crypto",
    "macsec_encrypt": "software_crypto",
    "dev_queue_xmit_nit": "packet_tap",
    "__skb_tstamp_tx": "tx_timestamp",
    "skb_tstamp_tx": "tx_timestamp",
    "skb_complete_tx_timestamp": "tx_timestamp",
    "__skb_complete_tx_timestamp": "tx_timestamp",
    "tun_net_xmit": "tun_tap",
    "tap_handle_frame": "tun_tap",
    "netkit_xmit": "tun_tap",
    "__bpf_redirect_no_mac": "bpf_redirect",
    "__bpf_redirect_common": "bpf_redirect",
    "__bpf_redirect": "bpf_redirect",
    "skb_do_redirect": "bpf_redirect",
    "bpf_clone_redirect": "bpf_redirect",
    "__netif_receive_skb_core": "local_delivery",
    "deliver_skb": "local_delivery",
    "ip_local_deliver_finish": "local_delivery",
    "ip6_input_finish": "local_delivery",
}

# What to do about each reason, one line.
ADVICE = {
    "local_delivery": "the receiver is on this host (loopback, veth peer): delivery to a local socket always copies",
    "packet_tap": "an AF_PACKET socket (tcpdump?) is capturing on the egress device: each send is copied for it",
    "tx_timestamp": "TX timestamps carry the payload: add SOF_TIMESTAMPING_OPT_TSONLY",
    "tun_tap": "tun/tap or netkit transmit copies zerocopy frags",
    "software_crypto": ("a software encryption layer (WireGuard, IPsec without ESP offload) checksums and "
                        "encrypts the payload in the packet's own memory, copying it out of your pages first: "
                        "zerocopy cannot avoid that copy on this path; send such flows without it, or offload "
                        "the crypto"),
    "software_gso": ("the path segments GSO packets in software without scatter-gather (WireGuard's wg_xmit "
                     "always; a device without SG after GSO): each segment gets a copy of the payload, "
                     "although the kernel's notification says zero-copy; zerocopy saves nothing on this "
                     "path (send large TCP writes without it, or use a path that keeps SG)"),
    "bpf_redirect": "a tc BPF program redirected the packet to where it is copied (a local socket, tun/tap): "
                    "redirect zerocopy traffic only to devices that transmit it",
    "other": "copied late (skb_copy_ubufs) by a caller zctrace does not know: see its stack (trace --verbose)",
    "no_sg": ("the egress device, or one a redirect sends to, has no scatter-gather: enable it (ethtool -K DEV "
              "sg on; the kernel drops SG from a device without TX checksum offload, so that too)"),
    "no_csum_offload": ("UDP zerocopy needs a CHECKSUM_PARTIAL datagram: TX checksum offload on the egress "
                        "device (ethtool -K DEV tx on) and no corking (MSG_MORE/UDP_CORK) without UDP_SEGMENT"),
    "over_mtu": "UDP payload plus headers exceed the MTU: raise the MTU or use UDP_SEGMENT (GSO)",
    "ipsec_no_esp_offload": ("UDP over an IPsec (xfrm) route is checksummed in software unless the device has "
                             "ESP TX checksum offload (esp-hw-offload and `offload dev` on the xfrm state): "
                             "copied at send; send such flows without MSG_ZEROCOPY, or offload ESP"),
    "io_uring_not_used": "no skb took the pages, and the route shows no cause (no_sg, over_mtu, no_csum_offload): "
                         "a zero-length send, or the route or cork changed since",
    "linked_notification": ("not a copy: the kernel counts a linked io_uring notification (TCP, 6.10+) copied "
                            "when its pages rode in an earlier send's skbs, and those were not copied"),
    "unknown": "copied, and this probe tier has no evidence why: the fentry/kprobe tiers see late copies",
    "so_zerocopy_unset": "MSG_ZEROCOPY without setsockopt(SO_ZEROCOPY, 1) is a silent plain copy",
    "enobufs_optmem": "net.core.optmem_max is too small for the notifications in flight: raise it or read notifications sooner",
    "enobufs_memlock": "pinned pages exceed RLIMIT_MEMLOCK: raise the limit (or CAP_IPC_LOCK)",
    "eopnotsupp": "this socket or path does not support zerocopy (socket type, kTLS)",
}


def classify(stack: tuple[str, ...]) -> str:
    """Reason for a late copy from its kernel stack (innermost frame first)."""
    for frame in stack:
        reason = _LATE_COPY_CALLERS.get(frame.split(".")[0])
        if reason:
            return reason
    return "other"


def _segmenting(name: str) -> bool:
    """A frame of GSO's own plumbing between a segmenting layer and skb_segment."""
    return name == "skb_segment" or name.endswith(("_gso_segment", "_ufo_fragment")) or name == "skb_udp_tunnel_segment"


# The copying functions at the top of a late copy's stack (the probes' own and the linearizing
# helpers between them and the caller that names the reason).
_COPYING = ("skb_copy_ubufs", "__pskb_pull_tail", "skb_checksum_help")


def late_copy_caller(stack: tuple[str, ...]) -> str:
    """The kernel function that called skb_copy_ubufs or __pskb_pull_tail (past skb_checksum_help;
    or, for skb_segment, the layer that asked for segmentation: wg_xmit, validate_xmit_skb): the
    first frame past them, the BPF trampoline frames and GSO's plumbing ('unknown' when the stack
    was not recorded)."""
    for frame in stack:
        name = frame.split(".")[0]
        if (name not in _COPYING and not _segmenting(name)
                and not name.startswith("bpf_") and name != "[unknown]"):
            return name
    return "unknown"
