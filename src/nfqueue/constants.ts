// Kernel ABI numbers from include/uapi/linux/netlink.h, netfilter/nfnetlink.h,
// netfilter/nfnetlink_queue.h and netfilter.h. Netlink headers are host byte order;
// everything inside nfnetlink_queue attributes is big-endian.

// netlink.h
export const NLMSG_HDRLEN = 16; // len u32, type u16, flags u16, seq u32, pid u32
export const NLA_HDRLEN = 4; // len u16, type u16
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;
export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
export const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

// nfnetlink.h
export const NFGENMSG_LEN = 4; // family u8, version u8, res_id be16 (queue number)
export const NFNETLINK_V0 = 0;
export const NFNL_SUBSYS_QUEUE = 3;

// nfnetlink_queue.h: message types (nlmsg_type = subsys << 8 | type)
export const NFQNL_MSG_PACKET = 0;
export const NFQNL_MSG_VERDICT = 1;
export const NFQNL_MSG_CONFIG = 2;
export const NFQNL_MSG_VERDICT_BATCH = 3;
export const NFQ_TYPE_PACKET = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET;
export const NFQ_TYPE_VERDICT = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT;
export const NFQ_TYPE_CONFIG = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG;

// enum nfqnl_attr_type
export const NFQA_PACKET_HDR = 1; // {be32 packet_id, be16 hw_protocol, u8 hook}
export const NFQA_VERDICT_HDR = 2; // {be32 verdict, be32 id}
export const NFQA_MARK = 3; // be32
export const NFQA_TIMESTAMP = 4;
export const NFQA_IFINDEX_INDEV = 5; // be32
export const NFQA_IFINDEX_OUTDEV = 6; // be32
export const NFQA_IFINDEX_PHYSINDEV = 7;
export const NFQA_IFINDEX_PHYSOUTDEV = 8;
export const NFQA_HWADDR = 9;
export const NFQA_PAYLOAD = 10;
export const NFQA_CT = 11;
export const NFQA_CT_INFO = 12;
export const NFQA_CAP_LEN = 13; // be32, full packet length when the copy was cut
export const NFQA_SKB_INFO = 14; // be32 NFQA_SKB_* flags
export const NFQA_EXP = 15;
export const NFQA_UID = 16;
export const NFQA_GID = 17;
export const NFQA_SECCTX = 18;
export const NFQA_VLAN = 19;
export const NFQA_L2HDR = 20;
export const NFQA_PRIORITY = 21;

// enum nfqnl_msg_config_cmds
export const NFQNL_CFG_CMD_NONE = 0;
export const NFQNL_CFG_CMD_BIND = 1;
export const NFQNL_CFG_CMD_UNBIND = 2;

// enum nfqnl_config_mode
export const NFQNL_COPY_NONE = 0;
export const NFQNL_COPY_META = 1;
export const NFQNL_COPY_PACKET = 2;

// enum nfqnl_attr_config
export const NFQA_CFG_CMD = 1; // {u8 command, u8 pad, be16 pf}
export const NFQA_CFG_PARAMS = 2; // {be32 copy_range, u8 copy_mode} packed: 5 bytes
export const NFQA_CFG_QUEUE_MAXLEN = 3; // be32
export const NFQA_CFG_MASK = 4; // be32
export const NFQA_CFG_FLAGS = 5; // be32

export const NFQA_CFG_F_FAIL_OPEN = 1 << 0;
export const NFQA_CFG_F_CONNTRACK = 1 << 1;
export const NFQA_CFG_F_GSO = 1 << 2;
export const NFQA_CFG_F_UID_GID = 1 << 3;
export const NFQA_CFG_F_SECCTX = 1 << 4;

export const NFQA_SKB_CSUMNOTREADY = 1 << 0;
export const NFQA_SKB_GSO = 1 << 1;
export const NFQA_SKB_CSUM_NOTVERIFIED = 1 << 2;

// netfilter.h verdicts
export const NF_DROP = 0;
export const NF_ACCEPT = 1;
export const NF_REPEAT = 4;

/** The kernel caps queue-maxlen here (and so does xt_NFQUEUE's user space). */
export const NFQ_MAX_QUEUE_LEN = 65536;
/** NFQNL_MAX_COPY_RANGE: 0xffff minus the attribute header. */
export const NFQ_MAX_COPY_RANGE = 0xffff - NLA_HDRLEN;

/** Bytes of one verdict message: nlmsghdr + nfgenmsg + VERDICT_HDR attr (+ MARK attr). */
export const VERDICT_LEN = NLMSG_HDRLEN + NFGENMSG_LEN + NLA_HDRLEN + 8;
export const VERDICT_MARK_LEN = VERDICT_LEN + NLA_HDRLEN + 4;
