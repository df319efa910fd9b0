build-fp/fs/ops.o: fs/ops.c fs/ops.h fs/inode.h \
 /usr/include/fuse3/fuse_lowlevel.h /usr/include/fuse3/fuse_common.h \
 /usr/include/fuse3/libfuse_config.h /usr/include/fuse3/fuse_opt.h \
 /usr/include/fuse3/fuse_log.h common/log.h fs/catalog.h chain/chain.h \
 chain/layer_io.h lvm/lvm.h lvm/../chain/chain.h lvm/../chain/layer_io.h \
 fs/handles.h fs/options.h fs/snapshot.h
fs/ops.h:
fs/inode.h:
/usr/include/fuse3/fuse_lowlevel.h:
/usr/include/fuse3/fuse_common.h:
/usr/include/fuse3/libfuse_config.h:
/usr/include/fuse3/fuse_opt.h:
/usr/include/fuse3/fuse_log.h:
common/log.h:
fs/catalog.h:
chain/chain.h:
chain/layer_io.h:
lvm/lvm.h:
lvm/../chain/chain.h:
lvm/../chain/layer_io.h:
fs/handles.h:
fs/options.h:
fs/snapshot.h:
