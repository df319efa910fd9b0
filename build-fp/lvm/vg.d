build-fp/lvm/vg.o: lvm/vg.c common/log.h lvm/lvm.h lvm/../chain/chain.h \
 lvm/../chain/layer_io.h lvm/../chain/layer_io.h lvm/lvm_cmd.h lvm/lvm.h
common/log.h:
lvm/lvm.h:
lvm/../chain/chain.h:
lvm/../chain/layer_io.h:
lvm/../chain/layer_io.h:
lvm/lvm_cmd.h:
lvm/lvm.h:
