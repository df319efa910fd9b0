build-fp/fs/main.o: fs/main.c common/log.h fs/catalog.h chain/chain.h \
 chain/layer_io.h lvm/lvm.h lvm/../chain/chain.h lvm/../chain/layer_io.h \
 fs/inode.h /usr/include/fuse3/fuse_lowlevel.h \
 /usr/include/fuse3/fuse_common.h /usr/include/fuse3/libfuse_config.h \
 /usr/include/fuse3/fuse_opt.h /usr/include/fuse3/fuse_log.h fs/ops.h \
 fs/inode.h fs/options.h fs/snapshot.h
common/log.h:
fs/catalog.h:
chain/chain.h:
chain/layer_io.h:
lvm/lvm.h:
lvm/../chain/chain.h:
lvm/../chain/layer_io.h:
fs/inode.h:
/usr/include/fuse3/fuse_lowlevel.h:
/usr/include/fuse3/fuse_common.h:
/usr/include/fuse3/libfuse_config.h:
/usr/include/fuse3/fuse_opt.h:
/usr/include/fuse3/fuse_log.h:
fs/ops.h:
fs/inode.h:
fs/options.h:
fs/snapshot.h:
