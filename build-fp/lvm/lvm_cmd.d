build-fp/lvm/lvm_cmd.o: lvm/lvm_cmd.c lvm/lvm_cmd.h lvm/lvm.h \
 lvm/../chain/chain.h lvm/../chain/layer_io.h lvm/../chain/layer_io.h \
 common/log.h lvm/dm_busy.h
lvm/lvm_cmd.h:
lvm/lvm.h:
lvm/../chain/chain.h:
lvm/../chain/layer_io.h:
lvm/../chain/layer_io.h:
common/log.h:
lvm/dm_busy.h:
