build-fp/lvm/lvm_change.o: lvm/lvm_change.c lvm/lvm_change.h lvm/lvm.h \
 lvm/../chain/chain.h lvm/../chain/layer_io.h lvm/../chain/layer_io.h \
 lvm/dm_busy.h lvm/lvm_cmd.h lvm/lvm.h
lvm/lvm_change.h:
lvm/lvm.h:
lvm/../chain/chain.h:
lvm/../chain/layer_io.h:
lvm/../chain/layer_io.h:
lvm/dm_busy.h:
lvm/lvm_cmd.h:
lvm/lvm.h:
