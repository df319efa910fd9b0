build-fp/fs/snapshot.o: fs/snapshot.c fs/snapshot.h chain/chain.h \
 chain/layer_io.h chain/merge.h chain/chain.h chain/qcow2_writer.h \
 chain/qcow2_create.h chain/qcow2_writer.h common/crash.h common/log.h \
 fs/catalog.h lvm/lvm.h lvm/../chain/chain.h lvm/../chain/layer_io.h \
 fs/options.h lvm/dm_busy.h lvm/lvm_change.h lvm/lvm.h lvm/pve_storage.h
fs/snapshot.h:
chain/chain.h:
chain/layer_io.h:
chain/merge.h:
chain/chain.h:
chain/qcow2_writer.h:
chain/qcow2_create.h:
chain/qcow2_writer.h:
common/crash.h:
common/log.h:
fs/catalog.h:
lvm/lvm.h:
lvm/../chain/chain.h:
lvm/../chain/layer_io.h:
fs/options.h:
lvm/dm_busy.h:
lvm/lvm_change.h:
lvm/lvm.h:
lvm/pve_storage.h:
